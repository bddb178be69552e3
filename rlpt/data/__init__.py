"""Offline datasets: the `Dataset` type, D4RL HDF5 and Minari I/O, scores, dataset generation."""

from rlpt.data.d4rl import load_d4rl, qlearning_dataset, save_d4rl
from rlpt.data.dataset import Dataset, EpisodeBounds
from rlpt.data.minari_io import convert, export_minari, load_minari, minari_root, resolve_minari_path
from rlpt.data.scores import dataset_normalized_score, normalized_score, reference_scores

__all__ = [
    "Dataset", "EpisodeBounds",
    "load_d4rl", "save_d4rl", "qlearning_dataset",
    "load_minari", "export_minari", "convert", "minari_root", "resolve_minari_path",
    "normalized_score", "dataset_normalized_score", "reference_scores",
]
