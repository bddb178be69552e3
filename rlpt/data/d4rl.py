"""D4RL HDF5 files: read, write, and `qlearning_dataset` with d4rl's exact semantics.

The layout (one flat array per key, episodes concatenated)::

    observations (N, *obs_shape)   actions (N, act_dim)   rewards (N,)   terminals (N,)
    timeouts (N,)                  # absent in some old v0 files
    next_observations (N, *obs_shape), images (N, H, W, C)   # optional
    infos/<name> (N, ...)          # per-row extras (qpos, qvel, goal, ...)
    metadata/<name>                # policy weights, algorithm, iteration, ... (attributes or small datasets)

Nothing here imports `d4rl` or touches the network: files are read and written with h5py only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from rlpt.data.dataset import Dataset
from rlpt.errors import (
    DatasetDtypeError,
    DatasetError,
    DatasetFileNotFoundError,
    DatasetKeyError,
    DatasetShapeError,
    DatasetValueError,
)
from rlpt.utils import atomic_write, load_json_bounded, to_jsonable

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
OPTIONAL_KEYS = ("timeouts", "next_observations", "images")
# Keys the loader derives itself; they describe this load, not the data, so save_d4rl does not write them.
DERIVED_METADATA_KEYS = ("source", "timeouts_present", "timeouts_note", "skipped_keys")
# Arrays that may be memory-mapped (the large ones); flags and rewards are always read into RAM.
_MMAP_KEYS = ("observations", "next_observations", "images", "actions")
# metadata/* datasets larger than this many elements are not read (recorded in metadata["skipped_keys"]).
METADATA_MAX_ELEMENTS = 1 << 22
MAX_EXPANSION = 2000  # declared bytes per byte of file beyond which an array is refused unread
_JSON_ATTR = "rlpt_json"


# ---------------------------------------------------------------------------------------------- reading
def _is_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "biuf"


def _decode(value: Any) -> Any:
    """h5py values → plain Python: bytes → str, numpy scalars → Python scalars, byte arrays → lists of str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO":
            flat = [_decode(v) for v in value.ravel().tolist()]
            return flat[0] if value.ndim == 0 else np.array(flat, dtype=object).reshape(value.shape).tolist()
        if value.dtype.kind == "U":
            return value.tolist()
        if value.ndim == 0:
            return value.item()
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_declared_size(dset: h5py.Dataset, key: str, path: Path) -> None:
    """Refuse an array whose declared size no real file of this size can hold (nor this machine's memory), before
    reading it: more than half the physical memory, or more than `MAX_EXPANSION` times the file's size (deflate
    cannot compress better than ~1000:1) plus 64 MiB."""
    declared = int(dset.size) * int(dset.dtype.itemsize)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every OS
        memory = 1 << 40
    limit = min(memory // 2, MAX_EXPANSION * path.stat().st_size + (64 << 20))
    if declared > limit:
        raise DatasetShapeError(f"{path}: key '{key}' declares shape {dset.shape} of {dset.dtype} "
                                f"({declared / 2**30:.1f} GiB); expected at most {limit / 2**30:.1f} GiB for a "
                                f"{path.stat().st_size}-byte file on this machine")


def _read_array(dset: h5py.Dataset, path: Path, mmap: bool, key: str = "") -> np.ndarray:
    """The whole dataset, memory-mapped when asked and possible (contiguous, uncompressed, allocated)."""
    _check_declared_size(dset, key or dset.name, path)
    if mmap and dset.ndim >= 1 and dset.size > 0 and dset.chunks is None and dset.compression is None:
        try:
            offset = dset.id.get_offset()
        except Exception:  # compact or external layouts have no single file offset
            offset = None
        if offset is not None and dset.dtype.kind in "biuf" and dset.dtype.fields is None:
            return np.memmap(path, dtype=dset.dtype, mode="r", offset=offset, shape=dset.shape)
    try:
        return dset[()]
    except MemoryError:
        raise DatasetValueError(f"{path}: key '{key or dset.name}' ({dset.shape} of {dset.dtype}) does not fit "
                                "in memory; pass mmap=True for uncompressed files") from None


def _walk(group: h5py.Group, prefix: str = "") -> list[tuple[str, h5py.Dataset]]:
    """All datasets under `group` as (relative/path, dataset), in file order."""
    out: list[tuple[str, h5py.Dataset]] = []
    for name, item in group.items():
        key = f"{prefix}{name}"
        if isinstance(item, h5py.Group):
            out.extend(_walk(item, key + "/"))
        elif isinstance(item, h5py.Dataset):
            out.append((key, item))
    return out


def _read_metadata(f: h5py.File, skipped: list[str], path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for name, value in f.attrs.items():
        meta[str(name)] = _decode(value)
    group = f.get("metadata")
    if isinstance(group, h5py.Dataset):  # a scalar JSON string or similar stored directly as "metadata"
        value = _decode(group[()])
        if isinstance(value, str) and group.attrs.get(_JSON_ATTR):
            value = load_json_bounded(value, f"{path}: metadata", DatasetValueError)
        if isinstance(value, dict):
            meta.update(value)
        else:
            meta["metadata"] = value
        return meta
    if not isinstance(group, h5py.Group):
        return meta
    for name, value in group.attrs.items():
        meta[str(name)] = _decode(value)
    for key, dset in _walk(group):
        if dset.size > METADATA_MAX_ELEMENTS:
            skipped.append(f"metadata/{key} ({dset.size} elements > {METADATA_MAX_ELEMENTS}, not read)")
            continue
        value = _decode(dset[()])
        if dset.attrs.get(_JSON_ATTR) and isinstance(value, str):
            value = load_json_bounded(value, f"{path}: metadata/{key}", DatasetValueError)
        meta[key] = value
    return meta


def _check_env(dataset: Dataset, env: Any) -> None:
    """`env` is a gymnasium Env (or anything with the two space attributes) or a pair of spaces."""
    if hasattr(env, "observation_space") and hasattr(env, "action_space"):
        obs_space, act_space = env.observation_space, env.action_space
    elif isinstance(env, tuple | list) and len(env) == 2:
        obs_space, act_space = env
    else:
        raise TypeError(f"env must be a gymnasium Env or an (observation_space, action_space) pair, "
                        f"got {type(env).__name__}")
    dataset.check_spaces(obs_space, act_space)


def load_d4rl(path: str | os.PathLike, *, mmap: bool = False, env: Any = None) -> Dataset:
    """Read an HDF5 file in the D4RL layout into a `Dataset`.

    Required keys: `observations, actions, rewards, terminals`; optional: `timeouts` (absent in old v0 files:
    read as all False and `metadata["timeouts_present"] = False`), `next_observations`, `images`,
    `infos/*` (per-row arrays go to `Dataset.infos`), `metadata/*` (attributes and datasets up to
    `METADATA_MAX_ELEMENTS` elements go to `Dataset.metadata`, strings decoded, nested names kept as `a/b`).
    `(N, 1)` rewards/terminals/timeouts are squeezed; arrays keep the file's dtype (D4RL files are float32).
    Keys that cannot be represented are listed in `metadata["skipped_keys"]`; `metadata["source"]` is the path
    (the file's own provenance, written by `save_d4rl`, is `metadata["origin"]`).

    Args:
        path: the .hdf5 file.
        mmap: memory-map large contiguous uncompressed arrays (observations, next_observations, images,
            actions) with `np.memmap` instead of reading them into RAM; chunked/compressed ones are read.
        env: a gymnasium Env or `(observation_space, action_space)`; observation/action shapes are checked.

    Raises:
        DatasetFileNotFoundError, DatasetValueError (not an HDF5 file, NaN/inf), DatasetKeyError (missing key),
        DatasetShapeError (mismatched lengths or env shapes), DatasetDtypeError (non-numeric arrays).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetFileNotFoundError(f"{path}: D4RL dataset file not found")
    if path.is_dir():
        raise DatasetValueError(f"{path}: is a directory; expected a D4RL HDF5 file (.hdf5)")
    if not h5py.is_hdf5(path):
        raise DatasetValueError(f"{path}: not an HDF5 file (no HDF5 signature); expected a D4RL .hdf5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetValueError(f"{path}: cannot open as HDF5: {e}") from e
    with f:
        datasets = dict(_walk(f))
        top = {k for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        for key in (*REQUIRED_KEYS, *OPTIONAL_KEYS):
            if key in f and key not in top:
                raise DatasetDtypeError(
                    f"{path}: key '{key}' is a group ({sorted(f[key].keys())[:8]}), e.g. dict observations; "
                    f"expected one array with a row per step")
        missing = [k for k in REQUIRED_KEYS if k not in top]
        if missing:
            raise DatasetKeyError(
                f"{path}: required key '{missing[0]}' is missing (D4RL layout needs {list(REQUIRED_KEYS)}); "
                f"keys present: {sorted(datasets)}")
        arrays: dict[str, np.ndarray] = {}
        for key in (*REQUIRED_KEYS, *OPTIONAL_KEYS):
            if key not in top:
                continue
            dset = f[key]
            if not _is_numeric(dset.dtype):
                raise DatasetDtypeError(
                    f"{path}: key '{key}' has dtype {dset.dtype} (shape {dset.shape}); "
                    f"expected a numeric or bool dtype")
            arr = _read_array(dset, path, mmap and key in _MMAP_KEYS, key)
            if key in ("rewards", "terminals", "timeouts") and arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim == 0:
                raise DatasetShapeError(f"{path}: key '{key}' is a scalar; expected an array with one row per step")
            arrays[key] = arr
        n = len(arrays["observations"])
        if n == 0:
            raise DatasetShapeError(f"{path}: key 'observations' has 0 rows; expected at least one step")
        skipped: list[str] = []
        infos: dict[str, np.ndarray] = {}
        for key, dset in datasets.items():
            if key in arrays or key.startswith("metadata/"):
                continue
            if key.startswith("infos/"):
                name = key[len("infos/"):]
                if not _is_numeric(dset.dtype):
                    skipped.append(f"{key} (dtype {dset.dtype} is not numeric)")
                elif dset.ndim == 0 or dset.shape[0] != n:
                    skipped.append(f"{key} (shape {dset.shape} is not one row per step; expected {n} rows)")
                else:
                    infos[name] = _read_array(dset, path, False, key)
            else:
                skipped.append(f"{key} (not part of the D4RL layout)")
        metadata = _read_metadata(f, skipped, path)
    timeouts_present = "timeouts" in arrays
    if not timeouts_present:
        arrays["timeouts"] = np.zeros(len(arrays["rewards"]), dtype=bool)
    metadata["source"] = str(path)
    metadata["timeouts_present"] = timeouts_present
    if not timeouts_present:
        metadata["timeouts_note"] = ("no 'timeouts' key in the file (old v0 layout): timeouts read as all False; "
                                     "pass max_episode_steps= to qlearning_dataset")
    if skipped:
        metadata["skipped_keys"] = skipped
    try:
        dataset = Dataset(
            observations=arrays["observations"], actions=arrays["actions"], rewards=arrays["rewards"],
            terminals=arrays["terminals"], timeouts=arrays["timeouts"],
            next_observations=arrays.get("next_observations"), images=arrays.get("images"),
            infos=infos, metadata=metadata)
    except DatasetError:
        raise
    except (ValueError, TypeError, IndexError) as e:  # anything numpy throws on malformed arrays
        raise DatasetShapeError(f"{path}: arrays do not form a valid dataset: {e}") from e
    if env is not None:
        _check_env(dataset, env)
    return dataset


# ---------------------------------------------------------------------------------------------- writing
def _write_metadata_value(group: h5py.Group, key: str, value: Any, path: Path) -> None:
    if not key or key.startswith("/") or key.endswith("/"):
        raise DatasetValueError(f"{path}: metadata key {key!r} cannot be stored as an HDF5 name")
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        group.create_dataset(key, data=value)
        return
    if isinstance(value, str):
        group.create_dataset(key, data=value, dtype=h5py.string_dtype("utf-8"))
        return
    if isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        group.create_dataset(key, data=value)
        return
    try:
        text = json.dumps(to_jsonable(value))
    except (TypeError, ValueError) as e:
        raise DatasetValueError(
            f"{path}: metadata key '{key}' holds a {type(value).__name__}, which is not JSON-serialisable "
            f"(expected numbers, strings, lists, dicts or numeric arrays): {e}") from e
    ds = group.create_dataset(key, data=text, dtype=h5py.string_dtype("utf-8"))
    ds.attrs[_JSON_ATTR] = True


def _origin(metadata: dict[str, Any]) -> str | None:
    """Provenance kept across saves: an existing `origin`, else the dataset's `source` (a generator's
    description such as "rlpt data make hopper-medium-v5", or the file it was loaded from)."""
    value = metadata.get("origin", metadata.get("source"))
    return None if value is None else str(value)


def save_d4rl(dataset: Dataset, path: str | os.PathLike, *, compression: str | None = None) -> Path:
    """Write `dataset` as a D4RL-layout HDF5 file, atomically (temp file, then rename).

    Writes observations, actions, rewards, terminals, timeouts (left out only when the dataset came from a
    v0 file without them and they are all False), next_observations and images if present, `infos/*`, and
    `metadata/*`: `origin` (the dataset's existing `origin`, else its `source`: where the data first came
    from; `load_d4rl` sets `source` to the file it reads), numeric arrays and scalars as datasets, strings
    as UTF-8 string datasets, other JSON-serialisable values as JSON strings tagged with the attribute
    `rlpt_json`. Keys containing `/` become nested groups. `load_d4rl` gives back identical arrays and
    metadata (tuples come back as lists).

    Args:
        dataset: what to write.
        path: the destination file; parent folders are created.
        compression: an h5py filter such as "gzip" or "lzf" for the array datasets (None: contiguous, so the
            file can be memory-mapped by `load_d4rl(..., mmap=True)`).
    """
    path = Path(path)
    kw = {"compression": compression} if compression else {}

    def put(f: h5py.File, key: str, arr: np.ndarray) -> None:
        arr = np.asarray(arr)
        f.create_dataset(key, data=arr, **(kw if arr.size and arr.ndim else {}))

    write_timeouts = dataset.metadata.get("timeouts_present", True) is not False or bool(dataset.timeouts.any())

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            put(f, "observations", dataset.observations)
            put(f, "actions", dataset.actions)
            put(f, "rewards", dataset.rewards)
            put(f, "terminals", dataset.terminals)
            if write_timeouts:
                put(f, "timeouts", dataset.timeouts)
            if dataset.next_observations is not None:
                put(f, "next_observations", dataset.next_observations)
            if dataset.images is not None:
                put(f, "images", dataset.images)
            for key, arr in dataset.infos.items():
                put(f, f"infos/{key}", arr)
            group = f.create_group("metadata")
            origin = _origin(dataset.metadata)
            if origin is not None:
                group.create_dataset("origin", data=origin, dtype=h5py.string_dtype("utf-8"))
            for key, value in dataset.metadata.items():
                if key == "origin":
                    continue
                if key in DERIVED_METADATA_KEYS:
                    continue
                try:
                    _write_metadata_value(group, str(key), value, path)
                except (ValueError, TypeError) as e:
                    if isinstance(e, DatasetError):
                        raise
                    raise DatasetValueError(
                        f"{path}: metadata key '{key}' cannot be written ({e}); a key 'a' and a key 'a/b' cannot "
                        f"both be stored, since 'a/b' makes 'a' a group") from e

    return atomic_write(path, write)


# ---------------------------------------------------------------------------------------------- q-learning view
def _final_steps_without_timeouts(terminals: np.ndarray, max_episode_steps: int, terminate_on_end: bool
                                  ) -> np.ndarray:
    """d4rl's `episode_step == env._max_episode_steps - 1` rule over rows 0..m-1, without a per-row loop.

    Mirrors d4rl exactly, including its quirks: a skipped (time-limit) row resets the counter to 0, while a
    terminal row (or a kept final row when terminate_on_end) resets it to 0 and then increments it, so the
    next episode starts counting at 1.
    """
    m = len(terminals)
    final = np.zeros(m, dtype=bool)
    term_idx = np.flatnonzero(terminals)
    i, step = 0, 0
    while i < m:
        jf = i + (max_episode_steps - 1 - step) if step <= max_episode_steps - 1 else m
        k = int(np.searchsorted(term_idx, i))
        jt = int(term_idx[k]) if k < len(term_idx) else m
        j = min(jf, jt)
        if j >= m:
            break
        if j == jf:
            final[j] = True
            step = 1 if terminate_on_end else 0
        else:
            step = 1
        i = j + 1
    return final


def qlearning_dataset(dataset: Dataset | Mapping[str, np.ndarray], terminate_on_end: bool = False, *,
                      max_episode_steps: int | None = None) -> dict[str, np.ndarray]:
    """(s, a, r, s', done) arrays with exactly `d4rl.qlearning_dataset`'s semantics.

    For i = 0..N-2: s = observations[i], s' = observations[i+1], a = actions[i], r = rewards[i],
    done = terminals[i]. Row i is skipped when it is the final step of an episode by time limit
    (`timeouts[i]`, or without timeouts `episode_step == max_episode_steps - 1`), unless `terminate_on_end`.
    The last row is always dropped; a `next_observations` array is ignored, as d4rl does.

    Args:
        dataset: a `Dataset` or a dict of arrays such as h5py would give (`timeouts` optional).
        terminate_on_end: keep the final step of time-limited episodes (d4rl's flag).
        max_episode_steps: the env's `_max_episode_steps`, used only when the data has no timeouts
            (old v0 files; `Dataset.metadata["timeouts_present"] is False`).

    Returns:
        dict with `observations, actions, next_observations, rewards` (float32) and `terminals` (float32 0/1;
        d4rl returns the same values as bool).
    """
    if isinstance(dataset, Dataset):
        src = dataset.source
        obs, act, rew, term = dataset.observations, dataset.actions, dataset.rewards, dataset.terminals
        timeouts = dataset.timeouts if dataset.metadata.get("timeouts_present", True) is not False else None
    else:
        src = "<dict dataset>"
        for key in ("observations", "actions", "rewards", "terminals"):
            if key not in dataset:
                raise DatasetKeyError(f"{src}: required key '{key}' is missing; keys present: {sorted(dataset)}")
        obs, act = np.asarray(dataset["observations"]), np.asarray(dataset["actions"])
        rew = np.asarray(dataset["rewards"]).reshape(len(dataset["rewards"]), -1)[:, 0]
        term = np.asarray(dataset["terminals"]).reshape(len(dataset["terminals"]), -1)[:, 0]
        timeouts = dataset.get("timeouts")
        if timeouts is not None:
            timeouts = np.asarray(timeouts).reshape(len(timeouts), -1)[:, 0]
    n = len(rew)  # d4rl: N = dataset['rewards'].shape[0]
    m = max(n - 1, 0)
    for key, arr in (("observations", obs), ("actions", act), ("terminals", term), ("timeouts", timeouts)):
        if arr is not None and len(arr) < n:
            raise DatasetShapeError(f"{src}: key '{key}' has {len(arr)} rows; expected {n} (the number of rewards)")
    term_b = np.asarray(term[:m]).astype(bool)
    if timeouts is not None:
        final = np.asarray(timeouts[:m]).astype(bool)
    else:
        if max_episode_steps is None:
            raise DatasetKeyError(
                f"{src}: no 'timeouts' key, so episode ends by time limit are unknown; pass "
                f"max_episode_steps=<the env's _max_episode_steps> (d4rl uses env._max_episode_steps)")
        final = _final_steps_without_timeouts(term_b, int(max_episode_steps), terminate_on_end)
    idx = np.arange(m) if terminate_on_end else np.flatnonzero(~final)
    obs_shape, act_shape = tuple(obs.shape[1:]), tuple(act.shape[1:])
    return {
        "observations": np.asarray(obs[idx], dtype=np.float32).reshape(len(idx), *obs_shape),
        "actions": np.asarray(act[idx], dtype=np.float32).reshape(len(idx), *act_shape),
        "next_observations": np.asarray(obs[idx + 1], dtype=np.float32).reshape(len(idx), *obs_shape),
        "rewards": np.asarray(rew[idx], dtype=np.float32),
        "terminals": term_b[idx].astype(np.float32),
    }
