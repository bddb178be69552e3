"""The config system: one YAML loader, one dotted setter, one override syntax and typed validation.

Every config rlpt reads -- agent configs, recipes, robot configs, pretraining configs, search spaces -- is a
mapping loaded with `load_yaml` (bounded `yaml.SafeLoader`), changed by `a.b=c` overrides (`parse_overrides`,
`apply_overrides`, `set_dotted`) and turned into a typed object by `validate`, which checks the mapping against a
dataclass's (or pydantic model's) annotations with pydantic v2 in lax mode: values that convert without loss
(`"2e-5"` for a float, `"256"` for an int, a list for a tuple) are converted; anything else raises
`ConfigError` naming the source, the key path, the expected type and the value given. Unknown keys are
rejected with the list of valid ones.

`config_flags` / `flag_overrides` build argparse flags from a config's fields, so a command's convenience
flags (`--batch-size 32`) are the same `batch_size=32` overrides, typed by the same annotations.

Core layer: imports only `rlpt.errors` and third-party packages (no torch: the CLI imports it to build its parser).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pydantic
import pydantic_core
import yaml

from rlpt.errors import ConfigError

__all__ = ["apply_overrides", "check_fields", "config_flags", "flag_overrides", "load_json_bounded", "load_yaml",
           "load_yaml_bounded", "parse_overrides", "set_dotted", "validate"]

MAX_ERRORS = 5  # validation problems listed in one message


# ----------------------------------------------------------------------------- loading
MAX_CONFIG_BYTES = 4 * 2**20  # a config or metadata file; real ones are a few KiB
MAX_CONFIG_NODES = 200_000  # scalars + collections once aliases are expanded
MAX_CONFIG_DEPTH = 64


def _text_of(data: str | bytes, where: str, error: type[Exception], max_bytes: int) -> str:
    if len(data) > max_bytes:
        raise error(f"{where}: {len(data)} bytes; expected a config of at most {max_bytes} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise error(f"{where}: expected UTF-8 text; got binary data (byte {e.start} is "
                        f"0x{data[e.start]:02x})") from None
    if "\x00" in data:
        raise error(f"{where}: expected text; got a NUL byte at offset {data.index(chr(0))} (a binary file?)")
    return data


def _check_tree(node: Any, children: Callable[[Any], list], where: str, error: type[Exception], max_nodes: int,
                max_depth: int) -> None:
    """Count the nodes of a tree as it would be once built (shared subtrees -- YAML aliases -- counted every time
    they appear, memoised so the count itself stays cheap); raise `error` past `max_nodes`/`max_depth`/cycles."""
    memo: dict[int, tuple[int, int]] = {}  # id -> (expanded size, height)
    active: set[int] = set()

    def visit(n: Any, depth: int) -> tuple[int, int]:
        key = id(n)
        if key in active:
            raise error(f"{where}: a recursive alias (a node that contains itself)")
        if key not in memo:
            active.add(key)
            total, height = 1, 0
            for c in children(n):
                size, h = visit(c, depth + 1)
                total, height = total + size, max(height, h + 1)
                if total > max_nodes:
                    raise error(f"{where}: more than {max_nodes} values once aliases are expanded (an alias bomb?)")
            active.discard(key)
            memo[key] = total, height
        if depth + memo[key][1] > max_depth:
            raise error(f"{where}: nested deeper than {max_depth} levels")
        return memo[key]

    visit(node, 0)


def load_yaml_bounded(data: str | bytes, where: str, error: type[Exception] = ConfigError, *,
                      max_bytes: int = MAX_CONFIG_BYTES, max_nodes: int = MAX_CONFIG_NODES,
                      max_depth: int = MAX_CONFIG_DEPTH) -> Any:
    """The one YAML loader for configs, recipes, specs and metadata: `yaml.SafeLoader`, bounded.

    The size (`max_bytes`), text-ness (UTF-8, no NUL) and the node graph (at most `max_nodes` values once
    aliases are expanded, `max_depth` levels, no recursive aliases) are checked *before* any Python object is
    built, so an alias bomb fails in milliseconds. Every failure raises `error` (a ConfigError subclass by
    default) naming `where` -- one line, no traceback.
    """
    text = _text_of(data, where, error, max_bytes)
    loader = yaml.SafeLoader(text)
    try:
        depth = 0  # the event parser is iterative: too deep a nesting fails here, before the recursive composer
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    raise error(f"{where}: nested deeper than {max_depth} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        node = loader.get_single_node()
        if node is None:
            return None
        _check_tree(node, lambda n: [x for kv in n.value for x in kv] if isinstance(n, yaml.MappingNode)
                    else list(n.value) if isinstance(n, yaml.SequenceNode) else [], where, error, max_nodes,
                    max_depth)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise error(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise error(f"{where}: unreadable value: {e}") from None
    finally:
        loader.dispose()


def load_json_bounded(data: str | bytes, where: str, error: type[Exception] = ConfigError, *,
                      max_bytes: int = MAX_CONFIG_BYTES, max_nodes: int = MAX_CONFIG_NODES,
                      max_depth: int = MAX_CONFIG_DEPTH) -> Any:
    """`json.loads` with the same bounds as `load_yaml_bounded` (size, text, depth, value count); any failure
    raises `error` naming `where`."""
    text = _text_of(data, where, error, max_bytes)
    try:
        obj = json.loads(text)
    except RecursionError:
        raise error(f"{where}: nested too deeply") from None
    except ValueError as e:
        raise error(f"{where}: not valid JSON: {e}") from None
    _check_tree(obj, lambda o: list(o.values()) if isinstance(o, dict) else o if isinstance(o, list) else [],
                where, error, max_nodes, max_depth)
    return obj


def load_yaml(path: str | os.PathLike, error: type[Exception] = ConfigError) -> Any:
    """Read a YAML file: `yaml.SafeLoader`, at most `rlpt.utils.MAX_CONFIG_BYTES` bytes, bounded depth and node
    count (aliases expanded), UTF-8 text. Every problem raises `error` naming the file; a missing file raises
    FileNotFoundError."""
    p = Path(path)
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:  # before reading it: a config is a few KiB
        raise error(f"{p}: {size} bytes; expected a config of at most {MAX_CONFIG_BYTES} bytes")
    return load_yaml_bounded(p.read_bytes(), str(p), error)


# ----------------------------------------------------------------------------- overrides
def _split_key(key: str, where: str, error: type[Exception]) -> list[str]:
    parts = key.split(".")
    if not key or any(not p or p != p.strip() for p in parts):
        raise error(f"{where}: bad key {key!r}; expected a dotted path like 'config.actor_lr'")
    return parts


def set_dotted(data: dict[str, Any], key: str, value: Any, where: str = "override",
               error: type[Exception] = ConfigError) -> None:
    """`data[a][b][c] = value` for `key="a.b.c"`, in place. Missing (or null) sections are created as mappings;
    a part that is a list index (`hidden.1`) sets that element of a list. Raises `error` when a part crosses a
    value that is neither a mapping nor a list, or indexes past a list's end."""
    parts = _split_key(key, where, error)
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        path = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise error(f"{where}: {key}: {'.'.join(parts[:i]) or 'the value'} is a list of {len(node)}; "
                            f"expected an index in [0, {len(node) - 1}], got {part!r}")
            part_key: Any = int(part)
        elif isinstance(node, dict):
            part_key = part
        else:
            raise error(f"{where}: {key}: {'.'.join(parts[:i])} is a value ({node!r}), not a section")
        if last:
            node[part_key] = value
        else:
            nxt = node[part_key] if isinstance(node, list) else node.get(part_key)
            if nxt is None:
                nxt = node[part_key] = {}
            elif not isinstance(nxt, dict | list):
                raise error(f"{where}: {key}: {path} is a value ({nxt!r}), not a section")
            node = nxt


def parse_overrides(items: Iterable[str] | Mapping[str, Any], where: str = "override",
                    error: type[Exception] = ConfigError) -> dict[str, Any]:
    """`["a.b=c", ...]` -> `{"a.b": value}`: the one override syntax. Each value is read as a YAML scalar or flow
    collection (`seed=1` an int, `hidden=[64,64]` a list, `pretrained=null` or `pretrained=` None, `lr=2e-5` the
    string "2e-5", which typed validation converts to a float). A mapping passes through (keys checked)."""
    if isinstance(items, Mapping):
        for key in items:
            _split_key(str(key), where, error)
        return dict(items)
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = str(item).partition("=")
        if not eq:
            raise error(f"{where}: override {item!r} must look like key=value (dotted keys reach into sections, "
                        "e.g. config.actor_lr=3e-4)")
        key = key.strip()
        _split_key(key, where, error)
        out[key] = load_yaml_bounded(raw, f"{where}: override {key}", error) if raw.strip() else None
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any], where: str = "override",
                    error: type[Exception] = ConfigError) -> dict[str, Any]:
    """A deep copy of `data` with `a.b=c` overrides (strings, or a mapping of dotted keys to values) set."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: expected a mapping of keys to values; got {_short(data)}")
    out = copy.deepcopy(dict(data))
    for key, value in parse_overrides(overrides, where, error).items():
        set_dotted(out, key, value, where, error)
    return out


# ----------------------------------------------------------------------------- validation
def check_fields(cls: type, data: Mapping[str, Any], source: str = "config") -> None:
    """Raise ConfigError when `data` names keys that are not fields of the dataclass `cls` (listing the valid
    ones); `source` says where `data` came from (a file, a preset)."""
    fields = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {fields}")



def _is_config_class(tp: Any) -> bool:
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or issubclass(tp, pydantic.BaseModel))


@functools.cache
def _adapter(cls: type) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(cls)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation of a dataclass or pydantic model."""
    if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        return {k: f.annotation for k, f in cls.model_fields.items()}
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _field_names(cls: type) -> list[str]:
    return sorted(_hints(cls))


def _strip_optional(tp: Any) -> Any:
    """`X | None` -> X (for walking into nested configs)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _check_unknown(cls: type, data: Any, source: str, prefix: str, error: type[Exception]) -> None:
    """Reject keys that are no field of `cls`, in nested config classes too (pydantic ignores extra keys of
    stdlib dataclasses)."""
    if not isinstance(data, Mapping):
        return
    if dataclasses.is_dataclass(cls):
        try:
            check_fields(cls, data, f"{source}: {prefix.rstrip('.')}" if prefix else source)
        except ConfigError as e:
            raise error(str(e)) from None
    else:
        unknown = sorted(set(map(str, data)) - set(_hints(cls)))
        if unknown:
            where = f"{source}: {prefix.rstrip('.')}" if prefix else source
            raise error(f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {_field_names(cls)}")
    for name, tp in _hints(cls).items():
        inner = _strip_optional(tp)
        if name in data and _is_config_class(inner):
            _check_unknown(inner, data[name], source, f"{prefix}{name}.", error)


def type_name(tp: Any) -> str:
    """A readable annotation: `float`, `tuple[int, ...]`, `str | None`, `Literal['auto']`."""
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if isinstance(tp, type) and not args:
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _locate(cls: type, loc: tuple) -> tuple[str, Any]:
    """The user-facing key path of a pydantic error location and the annotation found there (None when the
    location runs through a union member pydantic names, e.g. `('offline_steps', 'int')`)."""
    parts: list[str] = []
    tp: Any = cls
    for p in loc:
        base = _strip_optional(tp) if tp is not None else None
        if isinstance(p, int):
            parts.append(f"[{p}]")
            args = typing.get_args(base) if base is not None else ()
            origin = typing.get_origin(base)
            if origin is tuple and args and (len(args) == 2 and args[1] is Ellipsis):
                tp = args[0]
            elif origin is tuple and args and p < len(args):
                tp = args[p]
            elif origin in (list, set, frozenset) and args:
                tp = args[0]
            elif origin in (dict, Mapping) and len(args) == 2:
                tp = args[1]
            else:
                tp = None
        elif base is not None and _is_config_class(base) and p in _hints(base):
            parts.append(f".{p}")
            tp = _hints(base)[p]
        elif base is not None and typing.get_origin(base) in (dict, Mapping):
            parts.append(f".{p}")
            args = typing.get_args(base)
            tp = args[1] if len(args) == 2 else None
        # else: a union member's tag or a validator's name; the key path stays, the annotation is the field's
    path = "".join(parts).lstrip(".")
    return path, tp


def _short(v: Any, limit: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= limit else f"{r[:limit]}... ({len(r)} characters)"


def format_validation_error(cls: type, exc: pydantic.ValidationError, source: str, prefix: str = "") -> str:
    """One message for a pydantic ValidationError: `SOURCE: KEY: expected TYPE; got VALUE (why)` per key."""
    seen: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        path, tp = _locate(cls, tuple(err["loc"]))
        # the field's own annotation is what the user must match, even when pydantic reports a union member
        field_tp = _hints(cls).get(err["loc"][0]) if err["loc"] and isinstance(err["loc"][0], str) and \
            _is_config_class(cls) else None
        key = f"{prefix}{path}" if path else (prefix.rstrip(".") or "<top level>")
        if key in seen:
            continue
        expected = tp if tp is not None else field_tp
        if err["type"] == "missing":
            seen[key] = f"{key}: required key is missing" + (
                f" (expected {type_name(expected)})" if expected is not None else "")
        else:
            exp = f"expected {type_name(expected)}; " if expected is not None else ""
            seen[key] = f"{key}: {exp}got {_short(err['input'])} ({err['msg']})"
    lines = list(seen.values())
    more = f"; and {len(lines) - MAX_ERRORS} more" if len(lines) > MAX_ERRORS else ""
    if len(lines) == 1:
        return f"{source}: {lines[0]}"
    return f"{source}: {len(lines)} invalid values in {cls.__name__}: " + "; ".join(lines[:MAX_ERRORS]) + more


T = typing.TypeVar("T")


def validate(cls: type[T], data: Any, source: str = "config", *, prefix: str = "",
             error: type[Exception] = ConfigError) -> T:
    """Build `cls` (a dataclass or pydantic model) from the mapping `data`, typed by its annotations.

    Lax conversion where it is unambiguous (`"2e-5"` -> 2e-05 for a float, `"256"` -> 256 for an int, a list ->
    a tuple, nested mappings -> nested config classes); anything else raises `error` (ConfigError by default)
    naming `source` (the file or preset), the key path (`prefix` + key, e.g. `config.hidden[1]`), the expected
    type and the value given. Unknown keys fail with the list of valid ones. Errors the class's own
    `__post_init__` raises as `RlptError` pass through unchanged.
    """
    if not isinstance(data, Mapping):
        where = f"{source}: {prefix.rstrip('.')}" if prefix else source
        raise error(f"{where}: expected a mapping of {cls.__name__}'s fields ({', '.join(_field_names(cls))}); "
                    f"got {_short(data)}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise error(f"{source}: keys must be strings; got {_short(bad[0])}")
    _check_unknown(cls, data, source, prefix, error)
    try:
        return _adapter(cls).validate_python(dict(data))
    except pydantic.ValidationError as e:
        raise error(format_validation_error(cls, e, source, prefix)) from None


# ----------------------------------------------------------------------------- CLI flags
def _flag_type(tp: Any) -> Any | None:
    """The argparse `type` for an annotation (None: not a flag-able scalar)."""
    tp = _strip_optional(tp)
    if tp in (int, float, str):
        return tp
    return None


def config_flags(parser: argparse.ArgumentParser, cls: type, fields: Iterable[str], *,
                 help_prefix: str = "override the config's") -> None:
    """Add `--field-name VALUE` flags for the scalar `fields` of the config class `cls` (int, float, str; bool
    fields become `--field-name` switches that set True). Each flag is shorthand for the `field_name=VALUE`
    override; `flag_overrides(args, cls, fields)` collects the ones given."""
    hints = _hints(cls)
    for name in fields:
        if name not in hints:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        tp = _strip_optional(hints[name])
        flag = "--" + name.replace("_", "-")
        if tp is bool:
            parser.add_argument(flag, dest=f"cfg_{name}", action="store_const", const=True, default=None,
                                help=f"set {name}=true")
        elif _flag_type(tp) is not None:
            default = _default(cls, name)
            parser.add_argument(flag, dest=f"cfg_{name}", metavar=type_name(tp).upper(),
                                help=f"{help_prefix} {name} (same as {name}=VALUE"
                                     + (f"; class default {default!r})" if default is not None else ")"))
        else:
            raise ValueError(f"{cls.__name__}.{name} is {type_name(tp)}; only scalar fields become flags "
                             "(use the key=value override)")


def _default(cls: type, name: str) -> Any:
    """A field's plain default (None when it has none or a factory)."""
    if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        default = cls.model_fields[name].default
    else:
        default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    return None if default is dataclasses.MISSING or default is pydantic_core.PydanticUndefined else default


def flag_overrides(args: argparse.Namespace, fields: Iterable[str]) -> list[str]:
    """The `key=value` overrides that the `config_flags` flags in `args` stand for (flags not given: none)."""
    out = []
    for name in fields:
        value = getattr(args, f"cfg_{name}", None)
        if value is not None:
            out.append(f"{name}={'true' if value is True else value}")
    return out
