"""`rlpt tune RECIPE --space SPACE.yaml --num-samples N`: Ray Tune hyperparameter sweeps over any rlpt recipe.

Each trial runs `rlpt.train.train()` on the recipe with its sampled overrides (dotted keys such as
`config.alpha_bc` reach into the agent config) and writes an ordinary rlpt run folder. At every evaluation it
reports rlpt's metrics (`eval/return`, `eval/normalized_score`, `eval/success_rate`, ...) to Tune through
`tune.report`, together with a small Tune checkpoint that points at that run folder. A restored trial (a retry
after a failure with `--max-failures`, or `rlpt tune --resume`) reads the pointer and calls
`train(..., resume=run_folder)`, which continues from the run's last rlpt checkpoint.

A search space is a YAML mapping from recipe keys to distributions:

    config.alpha_bc: {type: loguniform, low: 1.0e-3, high: 1.0}
    config.batch_size: {type: choice, values: [128, 256]}
    config.hidden: {type: choice, values: [[64, 64], [256, 256]]}
    config.n_critics: {type: randint, low: 2, high: 6}        # high is exclusive (Tune's convention)
    seed: {type: grid, values: [0, 1, 2]}                     # every value, for each of --num-samples

Ray runs embedded by default (`ray.init` with the machine's CPUs, a bounded object store and a fresh temp
folder); `--address HOST:PORT` joins a running cluster (docs/cluster.md). At the end the sweep writes
`results.csv` (also printed) and `best_config.yaml`, the recipe with the best trial's overrides applied, which
`rlpt train best_config.yaml` reproduces.

Python:

    from rlpt.tune import tune_recipe
    out = tune_recipe("agents/iql/hopper-medium-replay-cpu.yaml", "agents/iql/tune/hopper-medium-replay.yaml",
                      num_samples=8, scheduler="asha")
    out["best_config"], out["results_csv"]
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlpt.cluster import init_ray
from rlpt.config import apply_overrides, load_yaml, set_dotted
from rlpt.errors import ConfigError, RlptError
from rlpt.train import Recipe, find_recipe

SPACE_TYPES: dict[str, tuple[str, ...]] = {
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "randint": ("low", "high"),
    "choice": ("values",),
    "grid": ("values",),
}
SCHEDULERS = ("asha", "fifo")
POINTER = "rlpt_trial.json"  # the file in each Tune checkpoint that names the trial's rlpt run folder


# ----------------------------------------------------------------------------- search spaces
def _number(value: Any, where: str, integer: bool = False) -> float | int:
    """YAML reads `1e-3` as a string; accept it, reject everything that is not a number."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def _check_key(key: str, recipe_data: dict[str, Any] | None, where: str) -> None:
    """A search-space key must name a recipe field, or `config.<field>` of the recipe's agent config."""
    fields = {f.name for f in dataclasses.fields(Recipe)}
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"{where}: bad key {key!r} (use recipe keys like 'seed' or dotted keys like "
                          "'config.actor_lr')")
    if parts[0] not in fields:
        raise ConfigError(f"{where}: {key!r} is not a recipe key; valid top-level keys: {sorted(fields)} "
                          "(agent settings go under 'config.', e.g. 'config.actor_lr')")
    if parts[0] == "config" and len(parts) >= 2 and recipe_data is not None:
        from rlpt.agents.base import BUILTIN_AGENTS, agent_class

        agent = recipe_data.get("agent")
        if agent not in BUILTIN_AGENTS:
            return  # the recipe itself will fail with the list of agents
        cls = agent_class(agent)
        agent_fields = {f.name for f in dataclasses.fields(cls.config_class)}
        if parts[1] not in agent_fields:
            raise ConfigError(f"{where}: {key!r}: {cls.config_class.__name__} (agent {agent!r}) has no field "
                              f"{parts[1]!r}; valid fields: {sorted(agent_fields)}")


def parse_space(data: Any, where: str = "search space", recipe_data: dict[str, Any] | None = None
                ) -> dict[str, dict[str, Any]]:
    """Validate a search space (`{key: {type: ..., ...}}`) and return it normalised (numbers as numbers).

    With `recipe_data` (the recipe's mapping), keys are checked against the recipe and its agent config.
    Raises ConfigError naming the key and what is wrong.
    """
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: a search space is a non-empty mapping {{key: {{type: ..., ...}}}}; got "
                          f"{type(data).__name__ if data else 'nothing'}")
    out: dict[str, dict[str, Any]] = {}
    for key, spec in data.items():
        w = f"{where}: {key}"
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be strings, got {key!r}")
        _check_key(key, recipe_data, where)
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"{w}: expected a mapping with a 'type' ({' | '.join(SPACE_TYPES)}), got {spec!r}")
        kind = spec["type"]
        if kind not in SPACE_TYPES:
            raise ConfigError(f"{w}: unknown type {kind!r}; valid types: {list(SPACE_TYPES)}")
        need = SPACE_TYPES[kind]
        missing = [k for k in need if k not in spec]
        if missing:
            raise ConfigError(f"{w}: type {kind} needs {list(need)}; missing {missing}")
        unknown = sorted(set(spec) - {"type", *need})
        if unknown:
            raise ConfigError(f"{w}: unknown field(s) {unknown} for type {kind} (valid: {['type', *need]})")
        if kind in ("choice", "grid"):
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{w}: 'values' must be a non-empty list, got {values!r}")
            _check_values(key, values, recipe_data, where)
            out[key] = {"type": kind, "values": values}
            continue
        integer = kind == "randint"
        low = _number(spec["low"], f"{w}.low", integer)
        high = _number(spec["high"], f"{w}.high", integer)
        if low >= high:
            raise ConfigError(f"{w}: low ({low}) must be below high ({high})"
                              + (" (randint's high is exclusive)" if integer else ""))
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{w}: loguniform needs low > 0, got {low}")
        _check_values(key, [low, high - 1 if integer else high], recipe_data, where)
        out[key] = {"type": kind, "low": low, "high": high}
    return out


def _check_values(key: str, values: list[Any], recipe_data: dict[str, Any] | None, where: str) -> None:
    """Each value set into the recipe must pass the recipe's and its agent config's typed validation (an int
    field sampled from floats, a tuple field given a number fail here, not in a trial)."""
    if recipe_data is None:
        return
    from rlpt.agents.base import known_agents

    for value in values:
        recipe = Recipe.from_dict(apply_sample(recipe_data, {key: value}), f"{where} ({key}: {value!r})")
        if recipe.agent in known_agents():
            recipe.check_agent_config(f"{where} ({key}: {value!r})")


def load_space(path: str | os.PathLike, recipe_data: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Read and validate a search-space YAML file (see `parse_space`)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"search space {p} not found")
    data = load_yaml(p)
    return parse_space(data, str(p), recipe_data)


def to_param_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Tune distributions for a parsed space."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, s in space.items():
        kind = s["type"]
        if kind == "uniform":
            out[key] = tune.uniform(s["low"], s["high"])
        elif kind == "loguniform":
            out[key] = tune.loguniform(s["low"], s["high"])
        elif kind == "randint":
            out[key] = tune.randint(s["low"], s["high"])
        elif kind == "choice":
            out[key] = tune.choice(s["values"])
        else:
            out[key] = tune.grid_search(s["values"])
    return out


# ----------------------------------------------------------------------------- recipes
def _plain(v: Any) -> Any:
    """Sampled values as plain YAML-able Python (numpy scalars -> numbers, tuples -> lists)."""
    if hasattr(v, "item") and not isinstance(v, list | dict | str):
        try:
            return v.item()
        except (TypeError, ValueError):
            pass
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def recipe_data(recipe: str, overrides: list[str] = ()) -> tuple[dict[str, Any], str]:
    """The recipe's mapping (with `key=value` overrides applied) and its path, as `load_recipe` reads it."""
    path = find_recipe(recipe)
    data = load_yaml(path) or {}
    data.setdefault("name", f"{path.parent.name}-{path.stem}")
    data = apply_overrides(data, list(overrides), str(path))
    Recipe.from_dict(dict(data), str(path))  # unknown/missing keys fail now, not in every trial
    return data, str(path)


def apply_sample(data: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    """A copy of the recipe mapping with a trial's sampled values set (dotted keys reach into sections)."""
    import copy

    out = copy.deepcopy(data)
    for key, value in sample.items():
        set_dotted(out, key, _plain(value))
    return out


def _n_evals(data: dict[str, Any]) -> int | None:
    """How many evaluations (Tune reports) a recipe makes, when its offline budget is a number."""
    off, on = data.get("offline_steps", 0) or 0, int(data.get("online_steps", 0) or 0)
    if not isinstance(off, int):
        return None
    n = math.ceil(off / max(1, int(data.get("eval_interval", 5000)))) if off else 0
    if on:
        n += math.ceil(on / max(1, int(data.get("online_eval_interval", 5000)))) + (1 if off else 0)
    return max(1, n)


# ----------------------------------------------------------------------------- Ray
# ----------------------------------------------------------------------------- the trainable
@dataclasses.dataclass
class TrialSpec:
    """What every trial needs besides its sampled config (passed with `tune.with_parameters`)."""

    recipe: dict[str, Any]  # the recipe mapping (CLI overrides applied)
    where: str  # the recipe's path, for error messages
    runs_root: str  # rlpt run folders go to <runs_root>/<trial id>/
    data_root: str
    metric: str
    cwd: str  # the driver's working folder (relative dataset paths in the recipe)
    torch_threads: int = 1


class _EvalClock:
    """The nominal rlpt step of each evaluation, following train()'s schedule (`on_eval` carries no step).

    Offline evaluations come every `eval_interval` updates up to the offline budget; with an offline phase,
    one evaluation at the switch (online step 0); then every `online_eval_interval` env steps. Agents that
    round env steps up to whole rollouts run slightly past the nominal online step.
    """

    def __init__(self, recipe: Recipe, run: Path | None):
        self.recipe, self.run = recipe, run
        self.off = self.on = 0
        self.total: int | None = None
        self.switched = False
        if run is not None:
            from rlpt.runs import RunDir

            ckpt = RunDir.open(run).latest_checkpoint()
            if ckpt is not None and (ckpt / "agent.json").exists():
                meta = json.loads((ckpt / "agent.json").read_text())
                self.off, self.on = int(meta.get("step", 0)), int(meta.get("online_steps", 0))

    def __call__(self, phase: str, run: Path | None) -> int:
        if self.total is None:
            total = self.recipe.offline_steps
            if not isinstance(total, int) and run is not None and (run / "config.yaml").exists():
                total = load_yaml(run / "config.yaml").get("offline_total_steps", 0)
            self.total = int(total) if isinstance(total, int) else 0
            self.switched = self.on > 0
        r = self.recipe
        if phase == "offline":
            if self.off < self.total:
                self.off = min(self.off + r.eval_interval, self.total)
            return self.off
        if not self.switched and self.on == 0 and self.total:
            self.switched = True
            return self.total
        self.switched = True
        self.on = min(self.on + r.online_eval_interval, r.online_steps)
        return self.total + self.on


def write_pointer(folder: str | os.PathLike, run: str | os.PathLike, **extra: Any) -> Path:
    """Write the Tune checkpoint content: a pointer to the rlpt run folder."""
    p = Path(folder) / POINTER
    p.write_text(json.dumps({"run": str(Path(run).resolve()), **extra}, indent=2))
    return p


def read_pointer(folder: str | os.PathLike) -> dict[str, Any]:
    p = Path(folder) / POINTER
    if not p.exists():
        raise RlptError(f"{folder}: not an rlpt trial checkpoint ({POINTER} missing)")
    return json.loads(p.read_text())


def _find_run(root: Path) -> Path | None:
    runs = sorted(p.parent for p in root.glob("*/config.yaml"))
    return runs[-1] if runs else None


def run_trial(config: dict[str, Any], spec: TrialSpec,
              on_report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Tune function trainable: one rlpt training run with the trial's overrides.

    Resume order: the run folder named by the Tune checkpoint (a restored trial), else a run folder this
    trial already started (killed before its first report), else a fresh run. `on_report(metrics)` runs
    after each report (hooks, tests).
    """
    import torch
    from ray import tune

    import rlpt.agents.rllib  # noqa: F401  (registers rllib_ppo / rllib_sac)
    from rlpt.train import train

    torch.set_num_threads(max(1, int(spec.torch_threads)))
    if Path(spec.cwd).is_dir():
        os.chdir(spec.cwd)  # Tune starts trials in their own folder; recipes may name relative paths
    recipe = Recipe.from_dict(apply_sample(spec.recipe, config), spec.where)
    trial_root = Path(spec.runs_root) / tune.get_context().get_trial_id()
    resume: Path | None = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            run = Path(read_pointer(d)["run"])
        if (run / "config.yaml").exists():
            resume = run
        else:
            print(f"warning: the trial checkpoint names {run}, which is missing; starting over")
    if resume is None:
        resume = _find_run(trial_root)
    clock = _EvalClock(recipe, resume)
    state: dict[str, Any] = {"run": resume, "evals": 0}

    def on_eval(m: dict[str, Any]) -> None:
        if spec.metric not in m:
            numeric = sorted(k for k, v in m.items() if isinstance(v, int | float))
            raise RlptError(f"metric {spec.metric!r} is not among rlpt's evaluation metrics {numeric} for "
                            f"{recipe.name} (eval/normalized_score needs reference scores: a dataset with "
                            "them or the recipe's ref_scores); pass --metric eval/return")
        if state["run"] is None:
            state["run"] = _find_run(trial_root)
        run = state["run"]
        state["evals"] += 1
        metrics = {k: float(v) for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        metrics["rlpt/step"] = clock(m.get("phase", "offline"), run)
        metrics["rlpt/online"] = float(m.get("phase") == "online")
        with tempfile.TemporaryDirectory(prefix="rlpt-trial-ckpt-") as d:
            write_pointer(d, run, step=metrics["rlpt/step"], trial=tune.get_context().get_trial_id())
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        if on_report is not None:
            on_report(metrics)

    summary = train(recipe, out_root=trial_root, data_root=Path(spec.data_root), resume=resume, quiet=True,
                    on_eval=on_eval)
    return {k: summary.get(k) for k in ("run", "offline_score", "online_score", "seconds")}


def rlpt_trainable(config: dict[str, Any], spec: TrialSpec) -> None:
    """The trainable `rlpt tune` hands to Tune (`tune.with_parameters(rlpt_trainable, spec=...)`)."""
    run_trial(config, spec)


# ----------------------------------------------------------------------------- the sweep
def make_scheduler(name: str, max_t: int | None, grace_period: int = 1, reduction_factor: float = 2):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if name == "fifo":
        return FIFOScheduler()
    if name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max(max_t or 100, grace_period + 1),
                             grace_period=grace_period, reduction_factor=reduction_factor)
    raise ConfigError(f"unknown scheduler {name!r}; valid: {list(SCHEDULERS)}")


def tune_recipe(recipe: str, space: str | os.PathLike | dict[str, Any], *, num_samples: int = 1,
                overrides: list[str] = (), scheduler: str = "fifo", metric: str = "eval/normalized_score",
                mode: str = "max", out: str | os.PathLike = "runs/tune", name: str | None = None,
                storage: str | None = None, address: str | None = None, data_root: str | os.PathLike = "data",
                num_cpus: int | None = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
                max_concurrent: int | None = None, max_failures: int = 0, grace_period: int = 1,
                resume: bool = False, object_store_mb: int | None = None, quiet: bool = False,
                trainable: Callable | None = None) -> dict[str, Any]:
    """Run a sweep and write `<out>/<name>/results.csv` and `best_config.yaml`; return paths and the table.

    `storage` (default: `out`) is Tune's storage_path: a shared folder (NFS) or `s3://...` on a cluster.
    The rlpt run folders always go to `<out>/<name>/runs/<trial id>/`, so on a multi-node cluster `out` must
    be a folder every node sees. `resume=True` continues an interrupted sweep of the same name (unfinished
    and errored trials resume from their rlpt checkpoints). `trainable` replaces `rlpt_trainable` (tests).
    """
    from ray import tune

    if mode not in ("max", "min"):
        raise ConfigError(f"--mode must be max or min, got {mode!r}")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {scheduler!r}; valid: {list(SCHEDULERS)}")
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    data, where = recipe_data(recipe, list(overrides))
    parsed = parse_space(space, "search space", data) if isinstance(space, dict) else load_space(space, data)
    out = Path(out).resolve()
    name = name or f"{data['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp_dir = out / name
    exp_dir.mkdir(parents=True, exist_ok=True)
    storage_path = storage or str(out)
    if "://" not in storage_path:
        storage_path = str(Path(storage_path).resolve())
    spec = TrialSpec(recipe=data, where=where, runs_root=str(exp_dir / "runs"),
                     data_root=str(Path(data_root).resolve()), metric=metric, cwd=os.getcwd(),
                     torch_threads=max(1, int(cpus_per_trial)))
    (exp_dir / "sweep.yaml").write_text(yaml.safe_dump(
        {"recipe": where, "overrides": list(overrides), "space": parsed, "num_samples": num_samples,
         "scheduler": scheduler, "metric": metric, "mode": mode, "address": address, "storage": storage_path},
        sort_keys=False))

    ray_info = init_ray(address=address, num_cpus=num_cpus, object_store_mb=object_store_mb)
    try:
        fn = tune.with_resources(tune.with_parameters(trainable or rlpt_trainable, spec=spec),
                                 {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        run_config = tune.RunConfig(
            name=name, storage_path=storage_path, verbose=0 if quiet else 1,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=max_failures))
        if resume:
            path = f"{storage_path.rstrip('/')}/{name}"
            if not tune.Tuner.can_restore(path):
                raise RlptError(f"--resume: no Tune experiment to restore at {path}")
            tuner = tune.Tuner.restore(path, trainable=fn, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                fn, param_space=to_param_space(parsed),
                tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=num_samples,
                                            scheduler=make_scheduler(scheduler, _n_evals(data), grace_period),
                                            max_concurrent_trials=max_concurrent),
                run_config=run_config)
        grid = tuner.fit()
        rows = results_table(grid, list(parsed), metric, mode, _n_evals(data))
    finally:
        if ray_info.get("started") or address:
            import ray

            ray.shutdown()
        if ray_info.get("temp_dir"):  # the embedded session's logs and sockets
            shutil.rmtree(ray_info["temp_dir"], ignore_errors=True)
    results_csv = write_table(rows, exp_dir / "results.csv")
    ok = [r for r in rows if r["status"] != "error" and r.get(metric) is not None]
    best_path = None
    if ok:
        best = ok[0]
        sample = {k: best[k] for k in parsed}
        best_path = write_best_config(data, sample, exp_dir / "best_config.yaml", metric=metric,
                                      value=best[metric], trial=best["trial"], run=best.get("run"), sweep=name,
                                      threads=max(1, int(cpus_per_trial)))
    return {"experiment": str(exp_dir), "storage": f"{storage_path.rstrip('/')}/{name}", "results_csv":
            str(results_csv), "best_config": str(best_path) if best_path else None, "rows": rows,
            "best": ok[0] if ok else None, "errors": [r for r in rows if r["status"] == "error"]}


def results_table(grid, keys: list[str], metric: str, mode: str, n_evals: int | None) -> list[dict[str, Any]]:
    """One row per trial, best first: its overrides, last and best metric, evaluations, run folder."""
    rows = []
    for res in grid:
        m = res.metrics or {}
        run = None
        if res.checkpoint is not None:
            try:
                with res.checkpoint.as_directory() as d:
                    run = read_pointer(d)["run"]
            except Exception:  # a checkpoint on remote storage that cannot be read here
                run = None
        best = None
        df = res.metrics_dataframe
        if df is not None and metric in df:
            vals = df[metric].dropna()
            if len(vals):
                best = float(vals.max() if mode == "max" else vals.min())
        evals = int(m.get("training_iteration", 0) or 0)
        status = "error" if res.error is not None else (
            "stopped" if n_evals is not None and evals < n_evals else "done")
        row = {"trial": m.get("trial_id") or (Path(res.path).name if res.path else "?"), "status": status,
               **{k: _plain(m.get("config", {}).get(k, (res.config or {}).get(k))) for k in keys},
               metric: m.get(metric), f"best {metric}": best, "evaluations": evals,
               "rlpt/step": m.get("rlpt/step"), "seconds": round(float(m.get("time_total_s", 0) or 0), 1),
               "run": run, "error": str(res.error).splitlines()[0][:200] if res.error is not None else ""}
        rows.append(row)
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (r["status"] == "error", r[metric] is None,
                             sign * r[metric] if r[metric] is not None else 0))
    return rows


def write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    if not rows:
        path.write_text("")
        return path
    cols = list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in r.items()})
    return path


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    """The results as an aligned text table (the run folder column last)."""
    if not rows:
        return "(no trials)"

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return json.dumps(v) if isinstance(v, list | dict) else str(v)

    cols = [c for c in rows[0] if c not in ("error", "run")] + ["run"]
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    errors = [f"  {r['trial']}: {r['error']}" for r in rows if r.get("error")]
    if errors:
        lines += ["errors:", *errors]
    return "\n".join(lines)


def write_best_config(data: dict[str, Any], sample: dict[str, Any], path: Path, *, metric: str, value: Any,
                      trial: str, run: str | None, sweep: str, threads: int = 1) -> Path:
    """The full recipe with the best trial's overrides applied, loadable by `rlpt train`.

    Trials ran with `threads` torch threads; training again with the same count (OMP_NUM_THREADS) on the same
    machine gives the trial's numbers exactly, another count only up to floating-point reduction order.
    """
    best = apply_sample(data, sample)
    best["name"] = f"{data['name']}-best"
    header = [f"# Best trial of `rlpt tune` sweep {sweep}: {metric} = {value} (trial {trial}).",
              f"# Overrides applied to the recipe: {json.dumps(_plain(sample))}",
              f"# Its run folder: {run}" if run else "# Its run folder: (not readable here)",
              f"# Reproduce with: OMP_NUM_THREADS={threads} rlpt train {path}  (trials ran with {threads} torch "
              "thread(s); the same count reproduces the trial's numbers exactly)"]
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump(_plain(best), sort_keys=False))
    Recipe.from_dict(load_yaml(path), str(path))
    return path
