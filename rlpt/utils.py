"""Small shared helpers: seeding, devices, atomic file writes, YAML/JSON I/O, config keys, checkpoint folders and
their manifests (SHA-256 of every file)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from rlpt._version import __version__
from rlpt.config import (  # noqa: F401  (re-exported: the bounded loaders live with the config system)
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    check_fields,
    load_json_bounded,
    load_yaml_bounded,
)
from rlpt.errors import CheckpointError, InputLimitError


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch; return a numpy Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`"auto"` picks CUDA when present, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def replace_dir(staging: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the finished folder `staging` to `path`, replacing any folder there (old one renamed aside, then
    removed), so a crash never leaves `path` half-written."""
    import shutil

    staging, path = Path(staging), Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, path)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temp file beside `path`, then rename it into place.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, yaml.safe_dump(to_jsonable(obj), sort_keys=False))


def read_bounded(read: Callable[[int], bytes], size: int | None, *, limit: int, deadline: float | None = None,
                 set_timeout: Callable[[float], None] | None = None, what: str = "input",
                 chunk: int = 1 << 16) -> bytes:
    """The one bounded reader for network input (robot-server frames, HTTP bodies).

    Reads exactly `size` bytes, or until EOF when `size` is None, through `read(n)` (returns at most n bytes, b""
    at EOF: `socket.recv`, `HTTPResponse.read1`). Raises InputLimitError when `size` or the bytes read exceed
    `limit` (before reading them), TimeoutError when `deadline` (a `time.monotonic()` instant) passes -- before
    each read `set_timeout(remaining)` is called, so a peer that trickles bytes cannot stretch the total -- and
    ConnectionError when EOF comes before `size` bytes.
    """
    if size is not None and size > limit:
        raise InputLimitError(f"{what} of {size} bytes exceeds the {limit}-byte limit")
    buf = bytearray()
    while size is None or len(buf) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what}: deadline passed after {len(buf)} bytes")
            if set_timeout is not None:
                set_timeout(remaining)
        want = chunk if size is None else min(size - len(buf), chunk)
        part = read(want)
        if not part:
            if size is None:
                break
            raise ConnectionError(f"{what}: connection closed by the peer after {len(buf)} of {size} bytes")
        buf += part
        if len(buf) > limit:
            raise InputLimitError(f"{what} exceeds the {limit}-byte limit")
    return bytes(buf)


def merge_nested(parts: Sequence[Mapping[str, Any]], depth: int) -> dict[str, Any]:
    """Merge result dicts of parallel benchmark runs: nested keys are united down to `depth` levels, below which
    a later part's entry replaces an earlier one (e.g. depth 2 for {seed: {condition: result}})."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if depth > 1 and isinstance(value, Mapping):
                merged[key] = merge_nested([merged.get(key, {}), value], depth - 1)
            else:
                merged[key] = value
    return merged


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def repo_root() -> Path | None:
    """The source checkout holding this package, if rlpt runs from one."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() else None


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):
            m = x == v
            r[m] = r[m].mean()
        return r

    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def rlpt_version() -> str:
    """The running rlpt's version."""
    return __version__


def checkpoint_folder(path: str | os.PathLike, marker: str) -> Path | None:
    """The folder holding the file `marker` (e.g. `contextwm.json`): `path` itself, else the step checkpoint that
    a run folder's `checkpoints/latest` names; None when neither holds it."""
    path = Path(path)
    if (path / marker).exists():
        return path
    latest = path / "checkpoints" / "latest"
    if latest.exists():
        folder = path / "checkpoints" / latest.read_text().strip()
        if (folder / marker).exists():
            return folder
    return None


MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "rlpt-manifest"
log = logging.getLogger("rlpt")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: str | os.PathLike, files: Sequence[str] | None = None) -> Path:
    """Write `folder/manifest.json`: the size and SHA-256 of `files` (default: every regular file directly in
    `folder`). Call it on a checkpoint's staging folder before it is renamed into place; `verify_manifest`
    checks it on load."""
    folder = Path(folder)
    names = sorted(files) if files is not None else sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    entries = {n: {"bytes": (folder / n).stat().st_size, "sha256": file_sha256(folder / n)} for n in names}
    return write_json(folder / MANIFEST, {"format": _MANIFEST_FORMAT, "version": 1, "files": entries})


def verify_manifest(folder: str | os.PathLike, required: bool = False) -> bool:
    """Check every file that `folder/manifest.json` lists against its size and SHA-256.

    Returns True when the manifest is there and every file matches, False when there is no manifest and
    `required` is False (a checkpoint written before manifests existed; a warning is logged). Raises
    CheckpointError naming the file, the expected and the actual value when a listed file is missing, has
    another size or checksum, or when the manifest itself is unreadable (or missing and `required`)."""
    folder = Path(folder)
    mf = folder / MANIFEST
    if not mf.exists():
        if required:
            raise CheckpointError(f"{folder}: {MANIFEST} is missing; this checkpoint was written with checksums "
                                  "and cannot be verified without it")
        log.warning("%s has no %s (written by an older rlpt?); its files cannot be verified", folder, MANIFEST)
        return False
    try:
        manifest = json.loads(mf.read_bytes()[: 1 << 20])
        files = manifest["files"] if manifest.get("format") == _MANIFEST_FORMAT else None
        if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
                and isinstance(v.get("bytes"), int) for k, v in files.items()):
            raise ValueError(f"expected format {_MANIFEST_FORMAT!r} with a 'files' table")
    except (ValueError, AttributeError, KeyError, TypeError, RecursionError) as e:
        raise CheckpointError(f"{mf}: not a valid checkpoint manifest: {type(e).__name__}: {e}") from None
    for name, entry in files.items():
        f = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CheckpointError(f"{mf}: file name {name!r} points outside the checkpoint")
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in {MANIFEST} but missing (incomplete checkpoint)")
        size = f.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(f"{f}: {size} bytes, expected {entry['bytes']} (truncated or replaced file; "
                                  f"{MANIFEST})")
        digest = file_sha256(f)
        if digest != entry["sha256"]:
            raise CheckpointError(f"{f}: SHA-256 {digest[:16]}... differs from {entry['sha256'][:16]}... in "
                                  f"{MANIFEST} (the file was changed or corrupted after it was written)")
    return True


def read_checkpoint_meta(path: str | os.PathLike, marker: str, fmt: str, version: int, kind: str,
                         command: str) -> dict[str, Any]:
    """The JSON file `marker` of a checkpoint or run folder (found by `checkpoint_folder`), plus `folder`: where
    it was found. Raises CheckpointError when it is missing (naming the `kind` of checkpoint and the `command`
    that writes one), is not JSON, or is not format `fmt` at a version <= `version`."""
    folder = checkpoint_folder(path, marker)
    if folder is None:
        raise CheckpointError(f"{Path(path)} is not a {kind} checkpoint: {marker} not found (write one with "
                              f"`{command} --out {Path(path)}`)")
    file = folder / marker
    if (folder / MANIFEST).exists():
        verify_manifest(folder)
    try:
        meta = json.loads(file.read_text())
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != fmt or meta.get("version", 0) > version:
        raise CheckpointError(f"{file}: expected format {fmt!r} version <= {version}, got {meta.get('format')!r} "
                              f"version {meta.get('version')}")
    meta["folder"] = str(folder)
    return meta
