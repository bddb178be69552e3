"""RoboFuME's success classifier (Yang et al., 2023), trained on rlpt's own simulator frames: the offline
default reward model.

Labels (RoboFuME's recipe): in a successful demonstration the last `n_pos` (3) frames are positives, the
`n_drop` (10) frames before them are dropped as ambiguous and every earlier frame is a negative; every frame
of a failed trajectory is a negative (`recipe_labels`). Training samples positives and negatives 50/50; a
frame counts as a success when P(success) > threshold, with the threshold calibrated on held-out episodes to
a false-positive budget (`calibrate_threshold`).

Pipeline: `collect_classifier_data` (scripted tabletop episodes with rendered frames) or
`labels_from_dataset` (an rlpt `Dataset` with `images`) -> `train_classifier` -> `SuccessClassifier.save`
-> `SuccessClassifierReward.load(path)` (a `RewardModel`: reward 1.0 on success, else 0.0).
`train_success_classifier` runs it end to end (`rlpt reward train-classifier`);
`evaluate_on_rollouts` measures a classifier against the simulator's ground-truth success.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlpt.errors import CheckpointError, ConfigError, RlptError
from rlpt.rewards.base import RewardModel, RewardOutput, RewardQuery
from rlpt.utils import atomic_write, resolve_device, write_json

if TYPE_CHECKING:  # pragma: no cover
    import gymnasium as gym

    from rlpt.data.dataset import Dataset
    from rlpt.rewards.wrapper import RewardWrapper

log = logging.getLogger(__name__)

FORMAT, FORMAT_VERSION = "rlpt-success-classifier", 1
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "classifier.json"
POSITIVE, NEGATIVE, DROPPED = 1, 0, -1
N_POS, N_DROP = 3, 10  # RoboFuME: last 3 frames positive, the 10 before them dropped
FAILURE_KINDS = ("stall", "noisy", "away", "random")
ROLLOUT_KINDS = ("demo", *FAILURE_KINDS)
NOISY_STD = 1.0  # action noise of "noisy" failure episodes (action units)
STALL_JITTER = 0.1  # action std while a "stall" episode hovers in place
DEFAULT_ARCH: dict[str, Any] = {"channels": 32, "strides": (2, 2, 2, 1), "feature_dim": 64}
THRESHOLD_RULE = ("the smallest threshold whose held-out false-positive rate is <= fp_target (this maximises "
                  "true positives), moved to the middle of the gap up to the next positive score (same held-out "
                  "counts, largest margin to both classes)")


# ---------------------------------------------------------------------------------------------- labels
def recipe_labels(success: Sequence[bool] | np.ndarray, n_pos: int = N_POS, n_drop: int = N_DROP) -> np.ndarray:
    """RoboFuME's labels for one episode's frames, given each frame's ground-truth success.

    A demonstration is taken to end `n_pos` frames after its first success frame k (a recorded demo stops
    once the task is done): frames k .. k+n_pos-1 are positives (any of them that is not a success is
    dropped), the `n_drop` frames before k are dropped as ambiguous, earlier frames are negatives, and frames
    after the demo's end are dropped. An episode without a success frame is a failure: all negatives. For an
    episode that ends n_pos-1 frames after its first success this is exactly "the last n_pos frames".

    Returns int8 labels: 1 positive, 0 negative, -1 dropped.
    """
    if n_pos < 1 or n_drop < 0:
        raise ConfigError(f"recipe_labels: need n_pos >= 1 and n_drop >= 0; got n_pos={n_pos}, n_drop={n_drop}")
    s = np.asarray(success, bool).reshape(-1)
    labels = np.full(len(s), NEGATIVE, np.int8)
    hits = np.flatnonzero(s)
    if len(hits) == 0:
        return labels
    k = int(hits[0])
    end = min(len(s), k + n_pos)
    labels[max(0, k - n_drop):k] = DROPPED
    labels[k:end] = np.where(s[k:end], POSITIVE, DROPPED)
    labels[end:] = DROPPED
    return labels


@dataclass
class ClassifierData:
    """Labelled frames for the success classifier.

    images: uint8 (N, H, W, 3) frames.
    labels: int8 (N,): 1 positive, 0 negative, -1 dropped (ambiguous; never trained or scored on).
    episodes: int64 (N,) episode id of each frame (splits are made by episode, never by frame).
    success: bool (N,) ground-truth success of each frame.
    metadata: task, camera, image_size, how the frames were made.
    """

    images: np.ndarray
    labels: np.ndarray
    episodes: np.ndarray
    success: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, np.int8).reshape(-1)
        self.episodes = np.asarray(self.episodes, np.int64).reshape(-1)
        self.success = np.asarray(self.success, bool).reshape(-1)
        im = self.images
        if im.dtype != np.uint8 or im.ndim != 4 or im.shape[-1] != 3:
            raise ConfigError(f"ClassifierData: images must be uint8 (N, H, W, 3); got {im.dtype} {im.shape}")
        n = len(im)
        for name in ("labels", "episodes", "success"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"ClassifierData: {name} has {len(getattr(self, name))} entries for {n} images")
        if not np.isin(self.labels, (DROPPED, NEGATIVE, POSITIVE)).all():
            raise ConfigError("ClassifierData: labels must be 1 (positive), 0 (negative) or -1 (dropped)")

    def __len__(self) -> int:
        return len(self.images)

    def summary(self) -> dict[str, int]:
        """Counts of frames, episodes and labels."""
        with_pos = np.unique(self.episodes[self.labels == POSITIVE])
        n_eps = len(np.unique(self.episodes))
        return {"frames": len(self), "episodes": n_eps, "success_episodes": len(with_pos),
                "other_episodes": n_eps - len(with_pos), "positives": int((self.labels == POSITIVE).sum()),
                "negatives": int((self.labels == NEGATIVE).sum()), "dropped": int((self.labels == DROPPED).sum())}

    @staticmethod
    def concatenate(parts: Sequence[ClassifierData]) -> ClassifierData:
        """Join several sets; episode ids are renumbered so that they stay distinct. Metadata of the first."""
        if not parts:
            raise ConfigError("ClassifierData.concatenate: nothing to join")
        eps, offset = [], 0
        for p in parts:
            _, inv = np.unique(p.episodes, return_inverse=True)
            eps.append(inv.reshape(-1) + offset)
            offset += int(inv.max()) + 1 if len(inv) else 0
        return ClassifierData(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                              np.concatenate(eps), np.concatenate([p.success for p in parts]), dict(parts[0].metadata))


def labels_from_dataset(dataset: Dataset, *, n_pos: int = N_POS, n_drop: int = N_DROP, success_key: str = "success",
                        success_of: str = "next") -> ClassifierData:
    """Label an rlpt `Dataset` with `images` and `infos[success_key]` by RoboFuME's recipe, episode by episode.

    success_of: what `infos[success_key][i]` describes. "next" (rlpt's recorder and Gymnasium's `info`): the
    state after row i's action, i.e. frame i+1; frame 0 of each episode is taken as not successful and a
    success reached only by the episode's last step (which has no frame) drops the frames before it.
    "frame": the state shown in `images[i]` itself.
    """
    if dataset.images is None:
        raise ConfigError(f"labels_from_dataset: {dataset.source} has no images; make one with "
                          "`rlpt data make tabletop-<task>-<kind> --images`")
    if success_key not in dataset.infos:
        raise ConfigError(f"labels_from_dataset: {dataset.source} has no infos[{success_key!r}]; "
                          f"it holds {sorted(dataset.infos)}")
    if success_of not in ("next", "frame"):
        raise ConfigError(f"labels_from_dataset: success_of must be 'next' or 'frame'; got {success_of!r}")
    succ = np.asarray(dataset.infos[success_key], bool)
    n = len(dataset)
    labels, frame_success, episodes = np.empty(n, np.int8), np.empty(n, bool), np.empty(n, np.int64)
    bounds = dataset.episode_bounds()
    for i, (s, e) in enumerate(zip(bounds.starts, bounds.ends, strict=True)):
        if success_of == "frame":
            flags = succ[s:e]
            lab = recipe_labels(flags, n_pos, n_drop)
        else:  # one more state than frames: the one after the last step
            flags = np.r_[False, succ[s:e]]
            lab = recipe_labels(flags, n_pos, n_drop)[:-1]
            flags = flags[:-1]
        labels[s:e], frame_success[s:e], episodes[s:e] = lab, flags, i
    env_id = str(dataset.metadata.get("env_id", ""))
    meta = {"task": env_id.removeprefix("tabletop/") if env_id.startswith("tabletop/") else None,
            "camera": dataset.metadata.get("camera"), "image_size": int(dataset.images.shape[1]),
            "source": dataset.source, "n_pos": n_pos, "n_drop": n_drop, "success_of": success_of}
    return ClassifierData(np.asarray(dataset.images), labels, episodes, frame_success, meta)


# ------------------------------------------------------------------------------------------ collection
def _instructions(task: str | None) -> list[str]:
    """The instructions of a tabletop task and its reverse (whose success looks the same), [] if unknown."""
    try:
        from rlpt.envs.tabletop import TASKS
    except ImportError:  # no MuJoCo here: training from given frames still works
        return []
    if task not in TASKS:
        return []
    return [TASKS[task].instruction, TASKS[TASKS[task].reverse].instruction]


def _task_name(task: str) -> str:
    from rlpt.envs.tabletop import TASKS

    name = str(task).removeprefix("tabletop/")
    if name not in TASKS:
        raise ConfigError(f"unknown tabletop task {task!r}; expected one of {sorted(TASKS)}")
    return name


@dataclass
class _Episode:
    frames: np.ndarray  # uint8 (T+1, H, W, 3): the reset frame, then one per step
    success: np.ndarray  # bool (T+1,): the episode's own task succeeds in that frame
    forward: np.ndarray  # bool (T+1,): the classifier's task succeeds in that frame
    kind: str
    task: str

    @property
    def first_success(self) -> int | None:
        hits = np.flatnonzero(self.success)
        return int(hits[0]) if len(hits) else None


def _run_episode(env, kind: str, rng: np.random.Generator, *, camera: str, image_size: int,
                 forward_success: Callable[[Any], bool], demo_noise: float, stall_at: int = 0,
                 stop_after_success: int | None = None) -> _Episode:
    """One episode of the env's current task with rendered frames.

    kind: "demo" (the scripted controller with `demo_noise`), "stall" (the controller until step `stall_at`,
    then hovering in place with jitter: a near miss), "noisy" (the controller with large action noise),
    "away" (the controller's motion reversed: moving away from its goal) or "random" (uniform random
    actions). With `stop_after_success=n`, the episode ends n frames after its first success frame (a
    demonstration that stops when the task is done).
    """
    from rlpt.envs.tabletop import scripted_policy

    env.reset(seed=int(rng.integers(2**31)))
    noise = NOISY_STD if kind == "noisy" else demo_noise
    policy = None if kind == "random" else scripted_policy(env, noise=noise, rng=rng)
    frames, own, fwd = [], [], []

    def shoot() -> None:
        frames.append(env.render_camera(camera, image_size))
        own.append(bool(env.task.success(env)))
        fwd.append(bool(forward_success(env)))

    shoot()
    first = 0 if own[0] else None
    gripper = 1.0
    for t in range(env.max_episode_steps):
        if stop_after_success is not None and first is not None and len(frames) >= first + stop_after_success:
            break
        if policy is None:
            a = rng.uniform(-1.0, 1.0, env.action_space.shape)
        elif kind == "stall" and t >= stall_at:
            a = np.r_[STALL_JITTER * rng.normal(size=3), gripper]
        else:
            a = policy()
            gripper = float(np.sign(a[-1]) or 1.0)
            if kind == "away":
                a[:3] = -a[:3]
        env.step(np.clip(a, -1.0, 1.0).astype(np.float32))
        shoot()
        if first is None and own[-1]:
            first = len(frames) - 1
    return _Episode(np.stack(frames), np.array(own), np.array(fwd), kind, env.task_name)


def collect_classifier_data(task: str, n_success: int = 40, n_failure: int = 40, camera: str = "front",
                            image_size: int = 64, seed: int = 0, *, reverse: bool = False, n_pos: int = N_POS,
                            n_drop: int = N_DROP, demo_noise: float = 0.1,
                            failure_kinds: Sequence[str] = FAILURE_KINDS, quiet: bool | None = None) -> ClassifierData:
    """Record scripted tabletop episodes with rendered frames and label them by RoboFuME's recipe.

    Successful demonstrations: the scripted controller (Gaussian action noise `demo_noise`), stopped
    `n_pos` - 1 steps after the env's ground-truth success first holds; attempts that never succeed are
    discarded. Failure trajectories (full length, kept only if the task never succeeds; attempts cycle
    through `failure_kinds`): "stall" (the controller, then hovering from a random step before its usual
    success time: near misses), "noisy" (action noise std 1.0), "away" (the controller's motion reversed),
    "random" (uniform random actions).
    With `reverse`, the reverse task (e.g. push-reset) is recorded the same way (RoboFuME's backward data);
    all frames are labelled by the forward task's ground-truth success.

    Returns `ClassifierData` with one episode id per recorded episode.
    """
    from rlpt.envs.tabletop import CAMERAS, TASKS, TabletopEnv
    from rlpt.runs import progress

    task = _task_name(task)
    if camera not in CAMERAS:
        raise ConfigError(f"collect_classifier_data: unknown camera {camera!r}; expected one of {list(CAMERAS)}")
    if n_success < 1 or n_failure < 0:
        raise ConfigError(f"collect_classifier_data: need n_success >= 1 and n_failure >= 0; got {n_success}, "
                          f"{n_failure}")
    bad = [k for k in failure_kinds if k not in FAILURE_KINDS]
    if bad or (n_failure and not failure_kinds):
        raise ConfigError(f"collect_classifier_data: failure_kinds must be taken from {list(FAILURE_KINDS)}; "
                          f"got {list(failure_kinds)}")
    forward = TASKS[task].success
    tasks = [task, TASKS[task].reverse] if reverse else [task]
    rng = np.random.default_rng(seed)
    env = TabletopEnv(task, camera=camera, image_size=image_size)
    episodes: list[_Episode] = []
    attempts = 0
    try:
        with progress(total=len(tasks) * (n_success + n_failure), desc=f"collect {task} frames", quiet=quiet) as bar:
            for name in tasks:
                env.set_task(name)
                success_steps: list[int] = []
                for want, demo in ((n_success, True), (n_failure, False)):
                    got, tries, limit = 0, 0, 5 * want + 20
                    while got < want:
                        if tries >= limit:
                            what = "successful demonstrations" if demo else "failed episodes"
                            raise RlptError(f"collect_classifier_data: only {got} of {want} {what} of {name} in "
                                            f"{tries} attempts; change demo_noise or failure_kinds")
                        tries += 1
                        kind = "demo" if demo else failure_kinds[(tries - 1) % len(failure_kinds)]
                        typical = int(np.median(success_steps)) if success_steps else env.max_episode_steps // 3
                        ep = _run_episode(env, kind, rng, camera=camera, image_size=image_size,
                                          forward_success=forward, demo_noise=demo_noise,
                                          stall_at=int(rng.integers(0, max(typical, 1))),
                                          stop_after_success=n_pos if demo else None)
                        if (ep.first_success is not None) != demo:
                            continue
                        if demo:
                            success_steps.append(ep.first_success)
                        episodes.append(ep)
                        got += 1
                        bar.update(1)
                    attempts += tries
    finally:
        env.close()
    labels = [recipe_labels(ep.forward, n_pos, n_drop) for ep in episodes]
    meta = {"task": task, "camera": camera, "image_size": image_size, "seed": seed, "reverse": reverse,
            "n_pos": n_pos, "n_drop": n_drop, "demo_noise": demo_noise, "attempts": attempts,
            "episode_kinds": [ep.kind for ep in episodes], "episode_tasks": [ep.task for ep in episodes]}
    return ClassifierData(np.concatenate([ep.frames for ep in episodes]), np.concatenate(labels),
                          np.concatenate([np.full(len(ep.frames), i) for i, ep in enumerate(episodes)]),
                          np.concatenate([ep.forward for ep in episodes]), meta)


# ----------------------------------------------------------------------------------------------- model
def random_shift(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation: replicate-pad a float batch (B, C, H, W) by `pad` pixels and crop it back at a
    random integer offset per image."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(offsets)])


class SuccessCNN(nn.Module):
    """Image -> success logit: 3x3 convs (`channels` each, `strides`) with ReLU, then
    Linear -> LayerNorm -> ReLU -> Linear. Input: (B, 3, H, W) pixel values in [0, 255] (uint8 or float),
    scaled to x / 255 - 0.5."""

    def __init__(self, image_size: int = 64, channels: int = 32, strides: Sequence[int] = (2, 2, 2, 1),
                 feature_dim: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for s in strides:
            layers += [nn.Conv2d(c, channels, 3, stride=int(s)), nn.ReLU()]
            c = channels
        self.convs = nn.Sequential(*layers, nn.Flatten())
        try:
            with torch.no_grad():
                flat = self.convs(torch.zeros(1, 3, image_size, image_size)).shape[1]
        except RuntimeError as e:
            raise ConfigError(f"SuccessCNN: {image_size}x{image_size} images are too small for strides "
                              f"{list(strides)}") from e
        self.head = nn.Sequential(nn.Linear(flat, feature_dim), nn.LayerNorm(feature_dim), nn.ReLU(),
                                  nn.Linear(feature_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x.float() / 255.0 - 0.5)).squeeze(-1)


class SuccessClassifier:
    """A trained success classifier: the CNN, its calibrated threshold and its config (task, camera,
    image_size, arch, training report). A frame is a success when `predict_proba(frame) > threshold`."""

    def __init__(self, net: SuccessCNN, threshold: float, config: dict[str, Any],
                 device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.threshold = float(threshold)
        self.config = dict(config)

    @property
    def task(self) -> str | None:
        return self.config.get("task")

    @property
    def camera(self) -> str | None:
        return self.config.get("camera")

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def report(self) -> dict[str, Any]:
        return self.config.setdefault("report", {})

    def _check(self, images: np.ndarray) -> np.ndarray:
        im = np.asarray(images)
        s = self.image_size
        if im.dtype != np.uint8 or im.ndim != 4 or im.shape[1:] != (s, s, 3):
            raise ConfigError(f"success classifier ({self.task}, camera {self.camera}) expects uint8 images "
                              f"(B, {s}, {s}, 3); got {im.dtype} {im.shape}. Render frames at image_size={s}, "
                              f"e.g. with SuccessClassifierReward.wrap(env) or RewardWrapper(..., image_size={s})")
        return im

    @torch.inference_mode()
    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """P(success) (float32, (B,)) for uint8 frames (B, H, W, 3)."""
        im = self._check(images)
        out = []
        for lo in range(0, len(im), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(im[lo:lo + batch_size])).to(self.device)
            out.append(torch.sigmoid(self.net(x.permute(0, 3, 1, 2))).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Success judgements (bool, (B,)) at the calibrated threshold."""
        return self.predict_proba(images) > self.threshold

    def save(self, path: str | Path) -> Path:
        """Write `model.safetensors` and `classifier.json` (task, camera, image size, threshold, report)."""
        from safetensors.torch import save_file

        from rlpt._version import __version__

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
        cfg = {"format": FORMAT, "version": FORMAT_VERSION, **self.config, "threshold": self.threshold,
               "rlpt_version": __version__}
        write_json(path / CONFIG_FILE, cfg)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> SuccessClassifier:
        """Load a folder written by `save` (raises CheckpointError when it is missing or incomplete)."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such success-classifier folder; train one with "
                                  f"`rlpt reward train-classifier --task TASK --out {path}`")
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise CheckpointError(f"{path}: {name} is missing (not a success-classifier folder, or an "
                                      "incomplete one)")
        try:
            cfg = json.loads((path / CONFIG_FILE).read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path / CONFIG_FILE}: not valid JSON ({e})") from e
        if cfg.get("format") != FORMAT or int(cfg.get("version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"{path / CONFIG_FILE}: format {cfg.get('format')!r} version "
                                  f"{cfg.get('version')!r}; expected {FORMAT!r} version <= {FORMAT_VERSION}")
        try:
            net = SuccessCNN(int(cfg["image_size"]), **cfg["arch"])
            net.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        except (KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: weights do not match the config's architecture ({e})") from e
        threshold = float(cfg.pop("threshold"))
        for k in ("format", "version", "rlpt_version"):
            cfg.pop(k, None)
        return cls(net, threshold, cfg, device)


# -------------------------------------------------------------------------------- training and metrics
def split_episodes(episodes: np.ndarray, holdout: float = 0.2, seed: int = 0,
                   labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean frame masks (train, held_out) that put every episode wholly on one side.

    A fraction `holdout` of the episodes (rounded; at least one and not all, when there are two or more)
    is held out. With `labels`, episodes with positives and the others are split separately, so both sides
    get both kinds.
    """
    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"split_episodes: holdout must be in (0, 1); got {holdout}")
    episodes = np.asarray(episodes)
    rng = np.random.default_rng(seed)
    ids = np.unique(episodes)
    if labels is None:
        groups = [ids]
    else:
        pos = np.unique(episodes[np.asarray(labels) == POSITIVE])
        groups = [pos, np.setdiff1d(ids, pos)]
    held: list[np.ndarray] = []
    for g in groups:
        k = int(round(holdout * len(g)))
        if len(g) >= 2:
            k = min(max(k, 1), len(g) - 1)
        held.append(rng.permutation(g)[:k])
    out = np.isin(episodes, np.concatenate(held))
    return ~out, out


def calibrate_threshold(probs: np.ndarray, labels: np.ndarray, fp_target: float = 0.05) -> float:
    """The success threshold (success iff p > threshold) by `THRESHOLD_RULE`.

    With k = floor(fp_target * n_negatives) allowed false positives, t0 is the (k+1)-th largest negative
    score: at most k negatives score above it, and any lower threshold lets more through, so t0 keeps the
    most positives. The returned threshold is the midpoint between t0 and the smallest positive score above
    it (1.0 when none), which leaves the held-out counts unchanged. Labels -1 are ignored.
    """
    if not 0.0 <= fp_target < 1.0:
        raise ConfigError(f"calibrate_threshold: fp_target must be in [0, 1); got {fp_target}")
    p, y = np.asarray(probs, np.float64).reshape(-1), np.asarray(labels).reshape(-1)
    neg = np.sort(p[y == NEGATIVE])[::-1]
    if len(neg) == 0:
        raise ConfigError("calibrate_threshold: needs negative frames to measure the false-positive rate")
    k = int(np.floor(fp_target * len(neg) + 1e-9))
    t0 = float(neg[k]) if k < len(neg) else 0.0
    above = p[(y == POSITIVE) & (p > t0)]
    nxt = float(above.min()) if len(above) else 1.0
    return (t0 + nxt) / 2.0


def _auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney, ties counted half)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inv, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inv.reshape(-1)]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Confusion counts, FP rate (of negatives), FN rate (of positives), accuracy, balanced accuracy,
    precision and ROC AUC of `probs > threshold` against labels 1/0 (-1 ignored). Undefined rates are None."""
    p, y = np.asarray(probs).reshape(-1), np.asarray(labels).reshape(-1)
    keep = y >= 0
    p, pos = p[keep], y[keep] == POSITIVE
    pred = p > threshold
    tp, fp = int((pred & pos).sum()), int((pred & ~pos).sum())
    fn, tn = int((~pred & pos).sum()), int((~pred & ~pos).sum())
    n_pos, n_neg = tp + fn, fp + tn
    fpr = fp / n_neg if n_neg else None
    fnr = fn / n_pos if n_pos else None
    return {"frames": n_pos + n_neg, "positives": n_pos, "negatives": n_neg, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "fp_rate": fpr, "fn_rate": fnr, "accuracy": (tp + tn) / max(n_pos + n_neg, 1),
            "balanced_accuracy": None if fpr is None or fnr is None else 1.0 - (fpr + fnr) / 2.0,
            "precision": tp / (tp + fp) if tp + fp else None, "auc": _auc(p, pos)}


def train_classifier(data: ClassifierData, *, steps: int = 1000, batch_size: int = 64, lr: float = 3e-4,
                     holdout: float = 0.2, fp_target: float = 0.05, augment_pad: int = 4,
                     arch: dict[str, Any] | None = None, seed: int = 0, device: str | torch.device = "auto",
                     quiet: bool | None = None) -> SuccessClassifier:
    """Train the success CNN on `data` and calibrate its threshold on held-out episodes.

    Episodes are split train/held-out by `split_episodes` (never a frame of one episode on both sides).
    Each Adam step sees a batch of half positives, half negatives (sampled with replacement), randomly
    shifted by up to `augment_pad` pixels, with a binary cross-entropy loss. The threshold comes from
    `calibrate_threshold(held-out probs, fp_target)`; `classifier.report` holds the held-out metrics at it
    (`binary_metrics`; note the FP rate there is <= fp_target by construction, see `evaluate_on_rollouts`
    for fresh data), the split and training statistics.
    """
    from rlpt.runs import progress

    if steps < 1 or batch_size < 2:
        raise ConfigError(f"train_classifier: need steps >= 1 and batch_size >= 2; got {steps}, {batch_size}")
    h, w = data.images.shape[1:3]
    if h != w:
        raise ConfigError(f"train_classifier: images must be square; got {h}x{w}")
    arch = {**DEFAULT_ARCH, **(arch or {})}
    arch["strides"] = [int(s) for s in arch["strides"]]
    train_mask, held_mask = split_episodes(data.episodes, holdout, seed, labels=data.labels)
    labeled = data.labels >= 0
    tr, he = np.flatnonzero(train_mask & labeled), np.flatnonzero(held_mask & labeled)
    for name, idx in (("training", tr), ("held-out", he)):
        n_pos = int((data.labels[idx] == POSITIVE).sum())
        if n_pos == 0 or n_pos == len(idx):
            raise RlptError(f"train_classifier: the {name} episodes hold {n_pos} positive and {len(idx) - n_pos} "
                            "negative frames; both are needed (record more successful and failed episodes)")
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SuccessCNN(h, **arch).to(dev)
    gen = torch.Generator().manual_seed(seed)
    x_train = torch.from_numpy(np.ascontiguousarray(data.images[tr])).permute(0, 3, 1, 2).to(dev)
    y_train = data.labels[tr]
    pos_idx = torch.from_numpy(np.flatnonzero(y_train == POSITIVE))
    neg_idx = torch.from_numpy(np.flatnonzero(y_train == NEGATIVE))
    n_neg = batch_size // 2
    target = torch.cat([torch.ones(batch_size - n_neg), torch.zeros(n_neg)]).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses: list[float] = []
    t0 = time.time()
    net.train()
    bar = progress(range(steps), desc="train success classifier", quiet=quiet)
    for step in bar:
        idx = torch.cat([pos_idx[torch.randint(len(pos_idx), (batch_size - n_neg,), generator=gen)],
                         neg_idx[torch.randint(len(neg_idx), (n_neg,), generator=gen)]]).to(dev)
        x = random_shift(x_train[idx].float(), augment_pad, gen)
        loss = F.binary_cross_entropy_with_logits(net(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    seconds = time.time() - t0
    meta = data.metadata
    config = {"task": meta.get("task"), "camera": meta.get("camera"), "image_size": int(h), "arch": arch,
              "instructions": _instructions(meta.get("task")), "reverse": bool(meta.get("reverse", False)),
              "fp_target": fp_target, "threshold_rule": THRESHOLD_RULE,
              "labels": {"n_pos": meta.get("n_pos", N_POS), "n_drop": meta.get("n_drop", N_DROP)},
              "data": data.summary()}
    clf = SuccessClassifier(net, 0.5, config, dev)
    probs = clf.predict_proba(data.images[he])
    clf.threshold = calibrate_threshold(probs, data.labels[he], fp_target)
    clf.config["report"] = {
        "threshold": clf.threshold,
        "heldout": binary_metrics(probs, data.labels[he], clf.threshold),
        "split": {"train_episodes": len(np.unique(data.episodes[train_mask])),
                  "heldout_episodes": len(np.unique(data.episodes[held_mask])),
                  "train_frames": len(tr), "heldout_frames": len(he)},
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "augment_pad": augment_pad, "seed": seed,
                  "final_loss": float(np.mean(losses[-50:])), "seconds": round(seconds, 1), "device": str(dev)},
    }
    return clf


def evaluate_on_rollouts(classifier: SuccessClassifier, episodes: int = 8, *, task: str | None = None,
                         seed: int = 10_000, kinds: Sequence[str] = ROLLOUT_KINDS, demo_noise: float = 0.1,
                         quiet: bool | None = None) -> dict[str, Any]:
    """FP/FN of `classifier` on fresh full-length rollouts against the env's ground-truth success.

    Episodes cycle through `kinds` ("demo": the scripted controller, which keeps going after success;
    "stall", "noisy", "random": as in `collect_classifier_data`, not filtered by outcome). Every frame
    (including those RoboFuME's recipe would drop as ambiguous) is compared with the ground truth:
    `frame` holds `binary_metrics`; `episode` counts episodes judged successful (any frame above threshold)
    against ground truth (any successful frame): fp_rate over failed episodes, fn_rate over successful ones.
    """
    from rlpt.envs.tabletop import TASKS, TabletopEnv
    from rlpt.runs import progress

    if not (task or classifier.task):
        raise ConfigError("evaluate_on_rollouts: the classifier names no task; pass task=")
    name = _task_name(task or classifier.task)
    bad = [k for k in kinds if k not in ROLLOUT_KINDS]
    if bad or not kinds or episodes < 1:
        raise ConfigError(f"evaluate_on_rollouts: need episodes >= 1 and kinds from {list(ROLLOUT_KINDS)}; got "
                          f"{episodes}, {list(kinds)}")
    camera = classifier.camera or "front"
    rng = np.random.default_rng(seed)
    env = TabletopEnv(name, camera=camera, image_size=classifier.image_size)
    probs, truth, ep_pred, ep_true = [], [], [], []
    try:
        for i in progress(range(episodes), desc=f"evaluate classifier on {name}", quiet=quiet):
            ep = _run_episode(env, kinds[i % len(kinds)], rng, camera=camera, image_size=classifier.image_size,
                              forward_success=TASKS[name].success, demo_noise=demo_noise,
                              stall_at=int(rng.integers(0, max(env.max_episode_steps // 3, 1))))
            p = classifier.predict_proba(ep.frames)
            probs.append(p)
            truth.append(ep.success)
            ep_pred.append(bool((p > classifier.threshold).any()))
            ep_true.append(bool(ep.success.any()))
    finally:
        env.close()
    frame = binary_metrics(np.concatenate(probs), np.concatenate(truth).astype(np.int8), classifier.threshold)
    pred, true = np.array(ep_pred), np.array(ep_true)
    episode = {"episodes": episodes, "successes": int(true.sum()), "judged_successes": int(pred.sum()),
               "fp": int((pred & ~true).sum()), "fn": int((~pred & true).sum()),
               "fp_rate": float((pred & ~true).sum() / (~true).sum()) if (~true).any() else None,
               "fn_rate": float((~pred & true).sum() / true.sum()) if true.any() else None}
    return {"task": name, "camera": camera, "seed": seed, "threshold": classifier.threshold, "frame": frame,
            "episode": episode}


def train_success_classifier(task: str, out: str | Path, *, episodes: int = 40, failures: int = 40,
                             steps: int = 1000, camera: str = "front", image_size: int = 64, seed: int = 0,
                             reverse: bool = False, fp_target: float = 0.05, eval_episodes: int = 8,
                             batch_size: int = 64, device: str | torch.device = "auto",
                             quiet: bool | None = None) -> SuccessClassifier:
    """`rlpt reward train-classifier`: collect `episodes` successful demonstrations and `failures` failed
    episodes of a tabletop task, train and calibrate the classifier, measure it on `eval_episodes` fresh
    rollouts (report["rollouts"]) and save it to the folder `out`."""
    data = collect_classifier_data(task, episodes, failures, camera, image_size, seed, reverse=reverse, quiet=quiet)
    clf = train_classifier(data, steps=steps, batch_size=batch_size, fp_target=fp_target, seed=seed, device=device,
                           quiet=quiet)
    if eval_episodes > 0:
        clf.report["rollouts"] = evaluate_on_rollouts(clf, eval_episodes, seed=seed + 10_000, quiet=quiet)
    clf.save(out)
    return clf


# -------------------------------------------------------------------------------------- reward model
class SuccessClassifierReward(RewardModel):
    """The success classifier as a `RewardModel`: reward 1.0 when P(success) > the calibrated threshold,
    else 0.0, with `success` and `prob` per item. Needs images from the classifier's camera at its image
    size (`wrap(env)` sets both on the `RewardWrapper`); other sizes raise ConfigError."""

    needs = ("images",)
    batch_size = 256

    def __init__(self, classifier: SuccessClassifier, path: str | Path | None = None) -> None:
        self.classifier = classifier
        self.path = None if path is None else str(path)
        self._warned_instruction = False

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> SuccessClassifierReward:
        """Load a folder written by `rlpt reward train-classifier` (or `SuccessClassifier.save`)."""
        return cls(SuccessClassifier.load(path, device), path)

    @property
    def camera(self) -> str | None:
        return self.classifier.camera

    @property
    def image_size(self) -> int:
        return self.classifier.image_size

    @property
    def threshold(self) -> float:
        return self.classifier.threshold

    def _check_instruction(self, instruction: str) -> None:
        known = self.classifier.config.get("instructions") or []
        if self._warned_instruction or not instruction or not known or instruction in known:
            return
        self._warned_instruction = True
        log.warning("success classifier for %r scores frames of another task (%r); its reward is likely "
                    "meaningless there", self.classifier.task, instruction)

    def score(self, query: RewardQuery) -> RewardOutput:
        if query.images is None:
            raise ConfigError("SuccessClassifierReward needs images (RewardQuery.images is None)")
        self._check_instruction(query.instruction)
        prob = self.classifier.predict_proba(query.images)
        success = prob > self.classifier.threshold
        valid = np.isfinite(prob)
        return RewardOutput(success.astype(np.float32), valid, success & valid, prob,
                            ["" if v else "malformed" for v in valid])

    def wrap(self, env: gym.Env, **kwargs: Any) -> RewardWrapper:
        """`RewardWrapper(env, self, camera=<classifier's>, image_size=<classifier's>, **kwargs)`."""
        from rlpt.rewards.wrapper import RewardWrapper

        kwargs.setdefault("camera", self.camera)
        kwargs.setdefault("image_size", self.image_size)
        return RewardWrapper(env, self, **kwargs)

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "path": self.path, "task": self.classifier.task,
                "camera": self.camera, "image_size": self.image_size, "threshold": self.threshold}
