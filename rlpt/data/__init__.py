"""Offline datasets: the `Dataset` type, D4RL HDF5 and Minari I/O, scores, dataset generation."""

from rlpt.data.dataset import Dataset, EpisodeBounds

__all__ = ["Dataset", "EpisodeBounds"]
