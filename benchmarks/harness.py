"""Shared pieces of the benchmark scripts: machine and versions block, command line, threads, atomic result
writing and reading the partial result files that `--merge` joins.

Every `benchmarks/<name>.py` imports this module (`import harness`; the script's own folder is first on
`sys.path`) instead of repeating these pieces. The blocks only ever *add* keys to what a script wrote before,
so result files stay readable by the scripts that generate docs from them:

    from harness import add_merge_arg, machine, read_parts, set_threads, versions, write_result
    threads = set_threads(args.threads)
    report = {"benchmark": "x", "command": command_line(), "machine": machine(), "versions": versions(), ...}
    write_result("x", report)              # -> benchmarks/results/x.json, atomically
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


# ============================================================================================== machine
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; `platform.processor()` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages, rounded (None where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def gpu_info(device: Any = None) -> dict[str, Any] | None:
    """Name, memory and CUDA version of the GPU `device` (or of GPU 0 when torch sees one); None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dev = torch.device(device) if device is not None and str(device) != "auto" else torch.device("cuda", 0)
    if dev.type != "cuda":
        dev = torch.device("cuda", 0)
    props = torch.cuda.get_device_properties(dev)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
            "count": torch.cuda.device_count()}


def git_commit(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """{"commit": HEAD's hash or None, "dirty": whether tracked files differ from it} of `repo`."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"commit": head, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def machine(device: Any = None, **extra: Any) -> dict[str, Any]:
    """The machine block: platform, processor, CPU model, cores, torch threads, load average now, GPU, plus
    `extra` (a script's own keys, which win). `device` picks the GPU described when a run uses one."""
    block: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                             "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "loadavg_at_start": loadavg()}
    try:
        import torch

        block["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    dev_type = getattr(device, "type", str(device) if device is not None else None)
    block["gpu"] = gpu_info(device if dev_type == "cuda" else None)
    block["device"] = str(device) if device is not None else None
    block.update(extra)
    return block


def versions(**extra: Any) -> dict[str, Any]:
    """Python, torch, numpy and rlpt versions, rlpt's git commit, plus `extra` (e.g. mujoco=mujoco.__version__)."""
    block: dict[str, Any] = {"python": platform.python_version()}
    for mod in ("torch", "numpy", "rlpt"):
        try:
            block[mod] = __import__(mod).__version__
        except ImportError:
            block[mod] = None
    try:
        import rlpt

        rlpt_root = Path(rlpt.__file__).resolve().parent.parent
    except ImportError:
        rlpt_root = REPO_ROOT
    git = git_commit(rlpt_root)
    block.update({"rlpt_path": str(rlpt_root), "git_commit": git["commit"], "git_dirty": git["dirty"]})
    block.update(extra)
    return block


def command_line(prefix: str = "python") -> str:
    """The exact command that ran this script, shell-quoted: `prefix` (the interpreter) + argv."""
    return " ".join([prefix, *(shlex.quote(a) for a in sys.argv)])


def run_info() -> dict[str, Any]:
    """Who/when/where of this run: command, UTC start time, working directory, interpreter."""
    return {"command": command_line(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cwd": os.getcwd(), "executable": sys.executable}


# ============================================================================================== threads
def set_threads(n: int, interop: int | None = 1) -> int:
    """Use `n` torch intra-op threads (and `interop` inter-op threads where still settable); also export
    OMP/MKL_NUM_THREADS for subprocesses. Returns torch's thread count after the call."""
    if n < 1:
        raise ValueError(f"threads: expected an integer >= 1, given {n}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    if interop is not None:
        try:
            torch.set_num_interop_threads(interop)
        except RuntimeError:  # only settable before the first parallel work
            pass
    return torch.get_num_threads()


def add_threads_arg(p: argparse.ArgumentParser, default: int = 1) -> None:
    """`--threads N` (torch threads)."""
    p.add_argument("--threads", type=int, default=default, help=f"torch threads (default {default})")


def add_merge_arg(p: argparse.ArgumentParser, into: str = "--out") -> None:
    """`--merge A.json B.json ...`: join result files of parallel parts into the file `into` names, and exit."""
    p.add_argument("--merge", nargs="+", metavar="JSON", help=f"join the result files of parallel parts into {into} "
                   "and exit")


# ============================================================================================== results
def result_path(name: str | os.PathLike, results_dir: Path = RESULTS_DIR) -> Path:
    """benchmarks/results/<name>.json for a bare name; a path (with a folder or a suffix) as given."""
    p = Path(name)
    if p.suffix or len(p.parts) > 1:
        return p
    return results_dir / f"{p}.json"


def write_result(name: str | os.PathLike, report: Any, *, jsonl: bool = False) -> Path:
    """Write `report` as indented JSON (or append one JSON line with jsonl=True) to `result_path(name)`,
    atomically: a temp file in the same folder, then `os.replace`, so a reader never sees half a file."""
    path = result_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        old = path.read_text() if path.exists() else ""
        text = old + json.dumps(report, default=str) + "\n"
    else:
        text = json.dumps(report, indent=2, default=str) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def read_parts(files: Sequence[str | os.PathLike], agree: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Load the JSON result files that `--merge` joins; each top-level key in `agree` must be equal in all of them
    (otherwise the parts ran different settings and a merge would mix them). Raises ValueError naming the file,
    the key, the expected and the given value."""
    if not files:
        raise ValueError("--merge: expected at least one JSON file, given none")
    parts = []
    for f in files:
        try:
            parts.append(json.loads(Path(f).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--merge: cannot read {f}: {e}") from e
    for key in agree:
        first = parts[0].get(key)
        for f, part in zip(files[1:], parts[1:], strict=True):
            if part.get(key) != first:
                raise ValueError(f"--merge: {f} key {key!r}: expected {first!r} (as in {files[0]}), "
                                 f"given {part.get(key)!r}")
    return parts


def part_summary(files: Sequence[str | os.PathLike], parts: Sequence[dict[str, Any]],
                 keys: Sequence[str] = ("command", "machine")) -> list[dict[str, Any]]:
    """[{"file": f, <keys of that part>}...]: the provenance list a merged report keeps of its parts."""
    return [{"file": str(f), **{k: part.get(k) for k in keys}} for f, part in zip(files, parts, strict=True)]


def add_resummarize_arg(p: argparse.ArgumentParser) -> None:
    """`--resummarize FILE [FILE ...]`: recompute the summary of committed result files from their stored runs."""
    p.add_argument("--resummarize", nargs="+", metavar="JSON", help="recompute the summary parts of these result "
                   "files from the per-seed results they store (nothing else in them changes) and exit")


def resummarize(files: Sequence[str | os.PathLike], summaries: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Rewrite each result file with `summaries(report)` (the keys it returns, computed from the stored per-seed
    results, replace those in the report) and everything else as it was. Raises ValueError naming the file when
    it cannot be read."""
    for f in files:
        path = Path(f)
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--resummarize: cannot read {f}: {e}") from e
        new = summaries(report)
        for key, value in new.items():
            report[key] = value
        write_result(path, report)
        print(f"{path}: recomputed {', '.join(new)}")
