"""Environment spec files (`envs/*.yaml`) and the catalog that lists them.

A spec file names one environment and the options `make_env` applies by default:

    id: mujoco/Hopper-v5          # what make_env builds (required)
    description: ...              # one line (required)
    d4rl_name: hopper             # D4RL locomotion envs only
    reverse_id: tabletop/...      # reset-free tasks: the task that undoes this one
    options: {frame_stack: 1}     # make_env keyword defaults; explicit arguments win

The catalog folder is `$RLPT_ENVS_DIR`, else the checkout's top-level `envs/`, else the copy
shipped inside the package (`rlpt/catalog/envs`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlpt.config import load_yaml
from rlpt.errors import EnvSpecError
from rlpt.utils import repo_root

ALLOWED_KEYS = {"name", "id", "description", "options", "d4rl_name", "reverse_id", "tags"}


@dataclass(frozen=True)
class EnvSpec:
    """One environment spec file, parsed."""

    name: str
    id: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    d4rl_name: str | None = None
    reverse_id: str | None = None
    tags: tuple[str, ...] = ()
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-type view (for JSON reports and `rlpt env list`)."""
        return {
            "name": self.name,
            "id": self.id,
            "description": self.description,
            "options": dict(self.options),
            "d4rl_name": self.d4rl_name,
            "reverse_id": self.reverse_id,
            "tags": list(self.tags),
            "path": str(self.path) if self.path else None,
        }


def envs_dir() -> Path:
    """The catalog folder: $RLPT_ENVS_DIR, else <repo>/envs, else rlpt/catalog/envs."""
    env_dir = os.environ.get("RLPT_ENVS_DIR")
    if env_dir:
        path = Path(env_dir)
        if not path.is_dir():
            raise EnvSpecError(f"RLPT_ENVS_DIR={env_dir} is not a directory")
        return path
    root = repo_root()
    if root is not None and (root / "envs").is_dir():
        return root / "envs"
    return Path(__file__).resolve().parent.parent / "catalog" / "envs"


def load_env_spec(path: str | os.PathLike) -> EnvSpec:
    """Parse and validate one spec file; errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise EnvSpecError(f"env spec file {path} does not exist")
    data = load_yaml(path, EnvSpecError)
    if not isinstance(data, dict):
        raise EnvSpecError(f"{path}: expected a mapping with keys id, description, ...; got {type(data).__name__}")
    unknown = sorted(set(data) - ALLOWED_KEYS)
    if unknown:
        raise EnvSpecError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(ALLOWED_KEYS)}")
    for key in ("id", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise EnvSpecError(f"{path}: key '{key}' must be a non-empty string, got {data.get(key)!r}")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise EnvSpecError(f"{path}: key 'options' must be a mapping, got {type(options).__name__}")
    for key in ("d4rl_name", "reverse_id", "name"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise EnvSpecError(f"{path}: key '{key}' must be a string, got {data[key]!r}")
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise EnvSpecError(f"{path}: key 'tags' must be a list of strings, got {tags!r}")
    return EnvSpec(
        name=data.get("name") or path.stem,
        id=data["id"].strip(),
        description=data["description"].strip(),
        options=dict(options),
        d4rl_name=data.get("d4rl_name"),
        reverse_id=data.get("reverse_id"),
        tags=tuple(tags),
        path=path.resolve(),
    )


def list_envs(directory: str | os.PathLike | None = None) -> list[EnvSpec]:
    """Every spec in the catalog folder (see `envs_dir`), sorted by name."""
    folder = Path(directory) if directory is not None else envs_dir()
    if not folder.is_dir():
        return []
    specs = [load_env_spec(p) for p in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))]
    return sorted(specs, key=lambda s: s.name)


def find_env_spec(name: str) -> EnvSpec | None:
    """The catalog spec called `name` (file stem or its `name:` key), or None."""
    for spec in list_envs():
        if name in (spec.name, spec.path.stem if spec.path else None):
            return spec
    return None
