"""Local Minari datasets: read them as flat `Dataset`s, write `Dataset`s as Minari datasets, convert to/from D4RL.

Minari stores one group per episode with T+1 observations (the initial and the final one) and T actions,
rewards, terminations and truncations. Flattening takes `obs[:-1]` as observations and `obs[1:]` as
next_observations, terminations → terminals, truncations → timeouts. Nothing here downloads: datasets are
found under `MINARI_DATASETS_PATH` (default `~/.minari/datasets`) or by folder path.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from rlpt.data.d4rl import DERIVED_METADATA_KEYS, _check_env, _origin, load_d4rl, save_d4rl
from rlpt.data.dataset import Dataset
from rlpt.errors import (
    DatasetDtypeError,
    DatasetError,
    DatasetFileNotFoundError,
    DatasetShapeError,
    DatasetValueError,
    EnvSpecError,
)
from rlpt.utils import load_json_bounded, to_jsonable

# rlpt's own metadata rides along in the Minari metadata.json under this key, so a round trip keeps it.
RLPT_METADATA_KEY = "rlpt"
# Array-valued metadata larger than this is left out of metadata.json (listed under skipped_metadata).
_MAX_JSON_ARRAY = 4096


def minari_root() -> Path:
    """Where local Minari datasets live: `$MINARI_DATASETS_PATH`, else `~/.minari/datasets` (not created)."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def _import_minari():
    try:
        import minari
    except ImportError as e:  # pragma: no cover - minari is a core dependency
        raise DatasetError(f"Minari datasets need the minari package: pip install \"minari[hdf5]\" ({e})") from e
    return minari


def resolve_minari_path(dataset_id_or_path: str | os.PathLike) -> Path:
    """The `data/` folder of a local Minari dataset given its id or a path to its folder (or its data folder)."""
    p = Path(dataset_id_or_path).expanduser()
    if p.is_dir():
        if (p / "data" / "metadata.json").is_file():
            return p / "data"
        if (p / "metadata.json").is_file():
            return p
        raise DatasetFileNotFoundError(
            f"{p}: not a Minari dataset folder (expected {p / 'data' / 'metadata.json'})")
    if p.exists():
        raise DatasetValueError(f"{p}: is a file; expected a Minari dataset id or dataset folder")
    root = minari_root()
    data = root / str(dataset_id_or_path) / "data"
    if (data / "metadata.json").is_file():
        return data
    raise DatasetFileNotFoundError(
        f"Minari dataset '{dataset_id_or_path}' not found locally: expected {data / 'metadata.json'} "
        f"(root {root}, from MINARI_DATASETS_PATH or ~/.minari/datasets). rlpt never downloads; fetch it "
        f"yourself with `minari download {dataset_id_or_path}` or pass the dataset folder's path")


def _flatten_infos(infos: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(infos, dict):
        for k, v in infos.items():
            out.update(_flatten_infos(v, f"{prefix}{k}/"))
    elif infos is not None:
        out[prefix.rstrip("/")] = infos
    return out


def load_minari(dataset_id_or_path: str | os.PathLike, *, env: Any = None) -> Dataset:
    """Read a local Minari dataset (by id or folder) as a flat `Dataset` with explicit next_observations.

    Episodes are concatenated: `observations = obs[:-1]`, `next_observations = obs[1:]`,
    `terminals = terminations`, `timeouts = truncations`. An episode whose last step is neither terminated
    nor truncated is closed with a timeout (counted in `metadata["minari_open_episodes_closed"]`) so episode
    bounds survive flattening. Per-step infos with T+1 rows (Minari's DataCollector records the reset info
    first) are aligned with the observations (`infos[:-1]`); infos with T rows are taken as they are; others
    are listed in `metadata["skipped_keys"]`. Arrays keep their stored dtype.

    Metadata: `source` (dataset folder), `minari_id`, `env_id` (env spec id), `ref_min_score`,
    `ref_max_score` when the dataset has them, Minari's descriptive fields, and rlpt's own metadata when the
    dataset was written by `export_minari`.

    Only Box observation and action spaces are supported (a Dict/Tuple space raises DatasetDtypeError).
    """
    data_path = resolve_minari_path(dataset_id_or_path)
    src = str(data_path.parent)
    minari = _import_minari()
    raw = load_json_bounded((data_path / "metadata.json").read_bytes(), str(data_path / "metadata.json"),
                            DatasetValueError)
    if not isinstance(raw, dict):
        raise DatasetValueError(f"{data_path / 'metadata.json'}: expected a JSON object; got {type(raw).__name__}")
    try:
        mds = minari.MinariDataset(data_path)
    except (ValueError, KeyError, TypeError, AssertionError, OSError, RecursionError) as e:
        raise DatasetValueError(f"{src}: cannot read this Minari dataset: {type(e).__name__}: {e}") from None
    from gymnasium import spaces

    for key, space in (("observations", mds.observation_space), ("actions", mds.action_space)):
        if not isinstance(space, spaces.Box):
            raise DatasetDtypeError(
                f"{src}: key '{key}' has a {type(space).__name__} space; rlpt datasets hold Box (array) "
                f"{key} only. Flatten it first (e.g. gymnasium.wrappers.FlattenObservation when collecting)")
    obs_shape, act_shape = tuple(mds.observation_space.shape), tuple(mds.action_space.shape)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("observations", "next_observations", "actions", "rewards",
                                           "terminals", "timeouts")}
    info_parts: dict[str, list[np.ndarray]] = {}
    skipped: set[str] = set()
    open_closed = empty_eps = n_used = 0
    for ep in mds.iterate_episodes():
        t = len(ep.rewards)
        obs = np.asarray(ep.observations)
        if obs.shape[:1] != (t + 1,) or tuple(obs.shape[1:]) != obs_shape:
            raise DatasetShapeError(
                f"{src}: episode {ep.id}: key 'observations' has shape {obs.shape}; expected "
                f"{(t + 1, *obs_shape)} (T+1 observations for T={t} steps)")
        act = np.asarray(ep.actions)
        for key, arr in (("actions", act), ("terminations", ep.terminations), ("truncations", ep.truncations)):
            if len(arr) != t:
                raise DatasetShapeError(
                    f"{src}: episode {ep.id}: key '{key}' has {len(arr)} rows; expected {t} (one per step)")
        if t == 0:
            empty_eps += 1
            continue
        term = np.asarray(ep.terminations, dtype=bool)
        trunc = np.asarray(ep.truncations, dtype=bool).copy()
        if not (term[-1] or trunc[-1]):
            trunc[-1] = True
            open_closed += 1
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(act.reshape(t, -1))
        parts["rewards"].append(np.asarray(ep.rewards).reshape(t))
        parts["terminals"].append(term)
        parts["timeouts"].append(trunc)
        flat = _flatten_infos(ep.infos or {})
        for key in set(info_parts) | set(flat):
            if key in skipped:
                continue
            val = flat.get(key)
            if val is None or (n_used > 0 and key not in info_parts):
                skipped.add(key)  # not recorded in every episode
                continue
            val = np.asarray(val)
            if val.dtype.kind not in "biuf" or val.ndim == 0 or len(val) not in (t, t + 1):
                skipped.add(key)
                continue
            info_parts.setdefault(key, []).append(val[:t])
        n_used += 1
    for key in skipped:
        info_parts.pop(key, None)
    if parts["observations"]:
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
    else:
        odt, adt = mds.observation_space.dtype, mds.action_space.dtype
        arrays = {"observations": np.zeros((0, *obs_shape), odt), "next_observations": np.zeros((0, *obs_shape), odt),
                  "actions": np.zeros((0, int(np.prod(act_shape))), adt), "rewards": np.zeros(0, np.float32),
                  "terminals": np.zeros(0, bool), "timeouts": np.zeros(0, bool)}
    infos = {k: np.concatenate(v) for k, v in info_parts.items()}

    metadata: dict[str, Any] = {}
    extra = raw.get(RLPT_METADATA_KEY)
    if isinstance(extra, dict):
        metadata.update(extra)
    metadata["source"] = src
    metadata["minari_id"] = raw.get("dataset_id")
    if mds.env_spec is not None:
        metadata["env_id"] = mds.env_spec.id
    eval_spec = getattr(mds, "_eval_env_spec", None)
    if eval_spec is not None and eval_spec.id != metadata.get("env_id"):
        metadata["eval_env_id"] = eval_spec.id
    for key in ("ref_min_score", "ref_max_score", "num_episodes_average_score", "algorithm_name", "author",
                "author_email", "code_permalink", "description", "requirements", "minari_version"):
        if raw.get(key) is not None:
            metadata[key] = raw[key]
    metadata["timeouts_present"] = True
    if open_closed:
        metadata["minari_open_episodes_closed"] = open_closed
    if empty_eps:
        metadata["minari_empty_episodes"] = empty_eps
    if skipped:
        metadata["skipped_keys"] = sorted(f"infos/{k} (not one numeric row per step in every episode)"
                                          for k in skipped)
    dataset = Dataset(observations=arrays["observations"], actions=arrays["actions"], rewards=arrays["rewards"],
                      terminals=arrays["terminals"], timeouts=arrays["timeouts"],
                      next_observations=arrays["next_observations"], infos=infos, metadata=metadata)
    if env is not None:
        _check_env(dataset, env)
    return dataset


# ---------------------------------------------------------------------------------------------- writing
def _box_for(arr: np.ndarray):
    from gymnasium import spaces

    shape = tuple(arr.shape[1:])
    dt = arr.dtype
    if dt == np.uint8:
        return spaces.Box(0, 255, shape, np.uint8)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return spaces.Box(info.min, info.max, shape, dt)
    if dt.kind == "f":
        return spaces.Box(-np.inf, np.inf, shape, dt)
    raise DatasetDtypeError(f"export_minari: arrays of dtype {dt} cannot be described by a Box space; "
                            f"expected float or integer arrays")


def _episode_buffers(dataset: Dataset) -> tuple[list[Any], int]:
    """One EpisodeBuffer per episode with T+1 observations; returns (buffers, rows dropped)."""
    from minari.data_collector import EpisodeBuffer

    b = dataset.episode_bounds()
    obs, nxt = dataset.observations, dataset.next_observations
    buffers, dropped = [], 0
    for s, e in zip(b.starts.tolist(), b.ends.tolist(), strict=True):
        term_end = bool(dataset.terminals[e - 1])
        if nxt is not None:
            if e - s > 1 and not np.array_equal(nxt[s:e - 1], obs[s + 1:e]):
                bad = s + int(np.flatnonzero(
                    (np.asarray(nxt[s:e - 1]) != np.asarray(obs[s + 1:e])).reshape(e - s - 1, -1).any(1))[0])
                raise DatasetValueError(
                    f"{dataset.source}: key 'next_observations' row {bad} differs from observations row {bad + 1} "
                    f"inside an episode; Minari stores one observation sequence per episode and cannot hold both")
            rows = np.arange(s, e)
            ep_obs = np.concatenate([obs[s:e], nxt[e - 1:e]])
        elif term_end:
            # the successor of a true terminal is never bootstrapped from; repeat the terminal observation
            rows = np.arange(s, e)
            ep_obs = np.concatenate([obs[s:e], obs[e - 1:e]])
        else:
            # ended by time limit (or the end of the data) without next_observations: the final row's successor
            # is unknown, so its transition is dropped and the row's observation becomes the final observation
            rows = np.arange(s, e - 1)
            ep_obs = np.asarray(obs[s:e])
            dropped += 1
            if len(rows) == 0:
                continue
        truncations = np.asarray(dataset.timeouts[rows], dtype=bool).copy()
        terminations = np.asarray(dataset.terminals[rows], dtype=bool)
        if not term_end:
            truncations[-1] = True
        buffers.append(EpisodeBuffer(
            id=len(buffers), observations=ep_obs, actions=np.asarray(dataset.actions[rows]),
            rewards=np.asarray(dataset.rewards[rows]), terminations=terminations, truncations=truncations))
    return buffers, dropped


def _jsonable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    skipped = []
    for key, value in metadata.items():
        if key in DERIVED_METADATA_KEYS:
            continue
        if isinstance(value, np.ndarray) and value.size > _MAX_JSON_ARRAY:
            skipped.append(f"{key} (array of {value.size} elements)")
            continue
        try:
            conv = to_jsonable(value)
            json.dumps(conv)
        except (TypeError, ValueError):
            skipped.append(f"{key} ({type(value).__name__} is not JSON-serialisable)")
            continue
        out[str(key)] = conv
    origin = _origin(metadata)
    if origin is not None:
        out["origin"] = origin
    if skipped:
        out["skipped_metadata"] = skipped
    return out


def export_minari(dataset: Dataset, dataset_id: str, *, author: str | None = None,
                  author_email: str | None = None, description: str | None = None,
                  algorithm_name: str | None = None, code_permalink: str | None = None,
                  env_id: str | None = None, ref_min_score: float | None = None,
                  ref_max_score: float | None = None, requirements: list[str] | None = None,
                  path: str | os.PathLike | None = None, data_format: str = "hdf5",
                  overwrite: bool = False) -> Path:
    """Write `dataset` as a Minari dataset, without stepping any environment; returns the dataset folder.

    Each episode needs T+1 observations. With `next_observations` they come from the rows plus the last row's
    next observation (mid-episode next_observations must equal the following row, else DatasetValueError).
    Without them: an episode ending in a true terminal repeats its terminal observation as the final
    observation (never bootstrapped from); an episode ending by time limit (or at the end of the data) has no
    known successor for its last row, so **that row's transition is dropped** and its observation becomes the
    episode's final observation (count stored as `rlpt.export_dropped_rows` in metadata.json). The episode's
    last step is marked truncated unless it is a true terminal. `infos` and `images` are not exported.
    Observations are stored losslessly (no JPEG), rlpt metadata rides along under the `rlpt` key.

    Args:
        dataset: what to write.
        dataset_id: Minari id `(namespace/)name-vN`; the dataset goes to `minari_root()/dataset_id`
            unless `path` is given.
        author, author_email, description, algorithm_name, code_permalink, requirements: Minari metadata.
        env_id: Gymnasium env id stored as the env spec (default `dataset.metadata["env_id"]`, ignored when
            that id is not registered); an explicit unregistered id raises EnvSpecError.
        ref_min_score, ref_max_score: normalized-score references (default: from `dataset.metadata`).
        path: write to this dataset folder instead of under the Minari root.
        data_format: Minari storage format ("hdf5", or "arrow" when pyarrow is installed).
        overwrite: replace an existing dataset folder (otherwise DatasetValueError, as Minari does).
    """
    _import_minari()  # a missing package fails before anything is written
    import gymnasium as gym
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.dataset.minari_storage import MinariStorage

    try:
        namespace, _, version = parse_dataset_id(dataset_id)
    except ValueError as e:  # Minari's own "Malformed dataset ID" message
        raise DatasetValueError(f"export_minari: {e}") from None
    except (TypeError, AttributeError):  # minari 0.5 does int(None) for an id without -v<N>
        version = None
    if version is None:
        raise DatasetValueError(f"export_minari: dataset id {dataset_id!r} is not '[namespace/]name-v<N>' "
                                f"(e.g. '{dataset_id}-v0'); Minari ids need a version") from None
    under_root = path is None
    # absolute: Minari joins the data path with itself for relative paths ('rel/x/data/rel/x/data/...')
    dest = (minari_root() / dataset_id) if under_root else Path(path).expanduser().absolute()
    if dest.exists() and not overwrite:
        raise DatasetValueError(f"{dest}: a Minari dataset already exists there; pass overwrite=True or "
                                f"choose another id/path")
    meta = dataset.metadata
    env_spec = None
    spec_id = env_id if env_id is not None else meta.get("env_id")
    if spec_id is not None:
        try:
            env_spec = gym.spec(str(spec_id))
        except gym.error.Error as e:
            if env_id is not None:
                raise EnvSpecError(f"export_minari: env id '{env_id}' is not registered with Gymnasium: {e}") from e
    if dataset.actions.dtype.kind not in "iuf" or dataset.observations.dtype.kind not in "iuf":
        raise DatasetDtypeError(
            f"{dataset.source}: observations ({dataset.observations.dtype}) and actions "
            f"({dataset.actions.dtype}) must be numeric to export to Minari")
    obs_space, act_space = _box_for(dataset.observations), _box_for(dataset.actions)
    buffers, dropped = _episode_buffers(dataset)
    if not buffers:
        raise DatasetValueError(f"{dataset.source}: no transitions to export ({len(dataset)} rows, "
                                f"{dataset.num_episodes} episodes, each too short without next_observations)")
    rlpt_meta = _jsonable_metadata(meta)
    rlpt_meta["export_dropped_rows"] = dropped
    try:
        rlpt_meta["rlpt_version"] = importlib.metadata.version("rlpt")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        pass
    lo = ref_min_score if ref_min_score is not None else meta.get("ref_min_score")
    hi = ref_max_score if ref_max_score is not None else meta.get("ref_max_score")
    minari_meta: dict[str, Any] = {
        "dataset_id": dataset_id, "minari_version": importlib.metadata.version("minari"),
        "algorithm_name": algorithm_name or _algorithm_name(meta),
        RLPT_METADATA_KEY: rlpt_meta,
    }
    if author is not None:
        minari_meta["author"] = {author}
    if author_email is not None:
        minari_meta["author_email"] = {author_email}
    if code_permalink is not None:
        minari_meta["code_permalink"] = code_permalink
    if description is not None:
        minari_meta["description"] = description
    if requirements is not None:
        minari_meta["requirements"] = list(requirements)
    if lo is not None and hi is not None:
        minari_meta["ref_min_score"], minari_meta["ref_max_score"] = float(lo), float(hi)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        storage = MinariStorage.new(tmp / "data", observation_space=obs_space, action_space=act_space,
                                    env_spec=env_spec, data_format=data_format, jpeg_encoding=False)
        storage.update_metadata(minari_meta)
        storage.update_episodes(buffers)
        if dest.exists():  # overwrite=True
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if under_root and namespace is not None:
        try:
            from minari.namespace import create_namespace, list_local_namespaces

            if namespace not in list_local_namespaces():
                create_namespace(namespace)
        except (ValueError, OSError):  # namespace metadata is only descriptive; the dataset is complete
            pass
    return dest


# ---------------------------------------------------------------------------------------------- conversion
_H5_SUFFIXES = (".hdf5", ".h5")


def _is_path_like(dst: str | os.PathLike) -> bool:
    if isinstance(dst, os.PathLike):
        return True
    return os.path.isabs(dst) or dst.startswith((".", "~"))


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, dataset_id: str | None = None,
            overwrite: bool = False, **export_kwargs: Any) -> Path:
    """Convert between D4RL HDF5 files and Minari datasets (either direction; also D4RL→D4RL and Minari→Minari).

    `src`: a D4RL `.hdf5` file, a Minari dataset folder, or a local Minari id.
    `dst`: a path ending in `.hdf5`/`.h5` (D4RL file); a `Path` or a string starting with `/`, `.` or `~`
    (a Minari dataset folder, id taken from `dataset_id` or the folder name plus `-v0`); or else a Minari id
    (written under `minari_root()`). Extra keyword arguments go to `export_minari` (author, description, ...).
    Returns the written file or folder.
    """
    src_path = Path(src).expanduser()
    dataset = load_d4rl(src_path) if src_path.is_file() else load_minari(src)
    if str(dst).lower().endswith(_H5_SUFFIXES):
        out = Path(dst).expanduser()
        if out.exists() and not overwrite:
            raise DatasetValueError(f"{out}: already exists; pass overwrite=True")
        return save_d4rl(dataset, out)
    if _is_path_like(dst):
        folder = Path(dst).expanduser()
        if dataset_id is None:
            dataset_id = folder.name if "-v" in folder.name and folder.name.rsplit("-v", 1)[1].isdigit() \
                else f"{folder.name}-v0"
        return export_minari(dataset, dataset_id, path=folder, overwrite=overwrite, **export_kwargs)
    return export_minari(dataset, str(dst), overwrite=overwrite, **export_kwargs)


def _algorithm_name(meta: dict[str, Any]) -> str:
    for key in ("algorithm_name", "policy"):
        if isinstance(meta.get(key), str) and meta[key]:
            return meta[key]
    return "rlpt"
