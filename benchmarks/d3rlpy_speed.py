"""rlpt IQL vs d3rlpy 2.8.0 IQL: gradient updates/s on rlpt's hopper-medium-replay file, same shapes, side by side.

Usage (d3rlpy lives in its own venv: it pins other gym/gymnasium versions than rlpt):
    python3 -m venv /work/venv-d3rlpy && /work/venv-d3rlpy/bin/pip install torch==2.13.0 h5py d3rlpy==2.8.0
    .venv/bin/python benchmarks/d3rlpy_speed.py [--rlpt-tree PATH] [--rlpt-python .venv/bin/python]
        [--d3rlpy-python /work/venv-d3rlpy/bin/python] [--data data/hopper-medium-replay-v5.hdf5]
        [--recipe agents/iql/hopper-medium-replay-cpu.yaml] [--steps 3000] [--rounds 5] [--chunk 500] [--warmup 200]
        [--threads 1] [--out benchmarks/results/d3rlpy_speed.json]
Takes about rounds x steps x (1/rlpt_rate + 1/d3rlpy_rate) plus ~1 min of set-up: ~6 min at the defaults on
one thread of a shared 2-core CPU.

Two worker processes (this file with `--worker rlpt|d3rlpy`) start once, each in its own interpreter with
`--threads` torch threads, load the same HDF5 file (rlpt: `load_d4rl`; d3rlpy: h5py into `MDPDataset`), build
IQL with the recipe's shapes and run `--warmup` updates. Then the driver alternates them, `--rounds` times
`--steps` updates each, in chunks of `--chunk` updates (the order flips every round, and only one worker computes
at a time, the other waits on its stdin); the medians of the per-round rates give the ratio rlpt / d3rlpy, by wall
clock and per second of each worker's CPU time (the steadier one when other jobs share the CPU). Interleaving
makes the ratio fair-ish on a shared machine: both libraries see the same load over a run; absolute rates drift.

What one update is, on both sides: sample a batch of `batch_size` transitions from the dataset in memory, then
one IQL step (V expectile, twin Q backup, advantage-weighted actor, Polyak target). rlpt: `IQL.fit(ds, n)`
(its own sampling, normalisation and metrics). d3rlpy: `dataset.sample_transition_batch` + `IQL.update`
(what d3rlpy's `fit` does per step, without its logger, so d3rlpy is measured at its leanest).
Shapes from the recipe's `config`: hidden sizes for actor, Q and V, batch size, expectile, temperature
(d3rlpy: weight_temp), adv_clip (max_weight), discount, tau, learning rates; observation standardisation
(StandardObservationScaler) and, with normalize_reward, rewards x 1000 / (max - min episode return)
(ReturnBasedRewardScaler(multiplier=1000)). Not matched: rlpt's cosine actor-lr decay (d3rlpy has none here)
and d3rlpy's one critic optimizer over Q and V (rlpt steps two) -- both cost microseconds per update.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_TREE = HERE.parent


# ============================================================================================== workers
def _read_recipe(path: str) -> dict[str, Any]:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def _recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe as the driver read it (workers get it as JSON: the d3rlpy venv has no YAML parser)."""
    return json.loads(args.recipe_json)


def _rlpt_worker(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    import gymnasium as gym

    import rlpt
    from rlpt.agents.iql import IQLConfig
    from rlpt.data.d4rl import load_d4rl

    recipe = _recipe(args)
    cfg = IQLConfig.from_dict(dict(recipe.get("config", {}), seed=0))
    ds = load_d4rl(args.data)
    env = gym.make(recipe.get("env", "Hopper-v5").removeprefix("mujoco/"))
    agent = cfg.create(env.observation_space, env.action_space, device="cpu")
    env.close()

    def run(n: int) -> int:
        before = agent.step
        agent.fit(ds, n)
        return agent.step - before

    info = {"library": "rlpt", "version": rlpt.__version__, "path": str(Path(rlpt.__file__).resolve().parent.parent),
            "config": cfg.to_dict(), "rows": len(ds)}
    return run, info


def _d3rlpy_worker(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    import d3rlpy
    import h5py
    import numpy as np
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    c = _recipe(args).get("config", {})
    with h5py.File(args.data, "r") as f:
        arrays = {k: f[k][()] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    d3rlpy.seed(0)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=arrays["observations"].astype(np.float32), actions=arrays["actions"].astype(np.float32),
        rewards=arrays["rewards"].astype(np.float32), terminals=arrays["terminals"].astype(np.float32),
        timeouts=arrays["timeouts"].astype(np.float32))
    hidden = list(c.get("hidden", [256, 256]))
    enc = d3rlpy.models.encoders.VectorEncoderFactory(hidden_units=hidden)
    batch_size = int(c.get("batch_size", 256))
    cfg = d3rlpy.algos.IQLConfig(
        actor_learning_rate=float(c.get("actor_lr", 3e-4)), critic_learning_rate=float(c.get("critic_lr", 3e-4)),
        batch_size=batch_size, gamma=float(c.get("discount", 0.99)), tau=float(c.get("tau", 0.005)),
        expectile=float(c.get("expectile", 0.7)), weight_temp=float(c.get("temperature", 3.0)),
        max_weight=float(c.get("adv_clip", 100.0)), actor_encoder_factory=enc, critic_encoder_factory=enc,
        value_encoder_factory=enc,
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler() if c.get("normalize_obs", True)
        else None,
        reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0)
        if c.get("normalize_reward", False) else None)
    algo = cfg.create(device="cpu:0")
    build_scalers_with_transition_picker(algo, dataset)
    algo.build_with_dataset(dataset)

    def run(n: int) -> int:
        for _ in range(n):
            algo.update(dataset.sample_transition_batch(batch_size))
        return n

    info = {"library": "d3rlpy", "version": d3rlpy.__version__, "rows": int(len(arrays["rewards"])),
            "config": {"hidden": hidden, "batch_size": batch_size, "expectile": cfg.expectile,
                       "weight_temp": cfg.weight_temp, "max_weight": cfg.max_weight, "gamma": cfg.gamma,
                       "tau": cfg.tau, "actor_learning_rate": cfg.actor_learning_rate,
                       "critic_learning_rate": cfg.critic_learning_rate,
                       "observation_scaler": type(cfg.observation_scaler).__name__,
                       "reward_scaler": type(cfg.reward_scaler).__name__}}
    return run, info


def worker(args: argparse.Namespace) -> None:
    """Build one library's IQL, warm it up, then answer `RUN n` lines with {"n", "wall", "cpu"} JSON lines."""
    import platform

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    run, info = (_rlpt_worker if args.worker == "rlpt" else _d3rlpy_worker)(args)
    run(args.warmup)
    info.update({"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                 "torch_threads": torch.get_num_threads(), "executable": sys.executable})
    print("READY " + json.dumps(info, default=str), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "QUIT":
            return
        n = int(cmd[1])
        t0, c0 = time.perf_counter(), time.process_time()
        done = run(n)
        print(json.dumps({"n": done, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}),
              flush=True)


# ============================================================================================== driver
class Worker:
    """A worker subprocess: started once, driven by `RUN n` lines."""

    def __init__(self, name: str, python: str, args: argparse.Namespace, env: dict[str, str]):
        cmd = [python, str(Path(__file__).resolve()), "--worker", name, "--data", args.data, "--recipe", args.recipe,
               "--recipe-json", json.dumps(_read_recipe(args.recipe)), "--threads", str(args.threads),
               "--warmup", str(args.warmup)]
        self.name, self.cmd = name, cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=env.get("PYTHONPATH") or None)

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker ({' '.join(self.cmd)}) exited with code {self.proc.wait()}; "
                               f"see its stderr above")
        return line

    def ready(self) -> dict[str, Any]:
        while True:
            line = self._line()
            if line.startswith("READY "):
                return json.loads(line[6:])

    def run(self, n: int) -> dict[str, float]:
        self.proc.stdin.write(f"RUN {n}\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("QUIT\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rlpt-tree", default=str(DEFAULT_TREE), help="the rlpt checkout measured (its PYTHONPATH)")
    p.add_argument("--rlpt-python", default=sys.executable, help="interpreter with rlpt's dependencies")
    p.add_argument("--d3rlpy-python", default="/work/venv-d3rlpy/bin/python", help="interpreter with d3rlpy 2.8.0")
    p.add_argument("--data", default=None, help="D4RL-layout HDF5 (default: <rlpt-tree>/data/"
                   "hopper-medium-replay-v5.hdf5)")
    p.add_argument("--recipe", default=None, help="IQL recipe whose config sets the shapes (default: <rlpt-tree>/"
                   "agents/iql/hopper-medium-replay-cpu.yaml)")
    p.add_argument("--steps", type=int, default=3000, help="updates per round and library")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians reported)")
    p.add_argument("--chunk", type=int, default=500, help="within a round the libraries alternate in chunks of "
                   "this many updates, so a change of machine load hits both (0: one chunk per round)")
    p.add_argument("--warmup", type=int, default=200, help="updates before timing, per library")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each worker")
    p.add_argument("--out", default=str(HERE / "results" / "d3rlpy_speed.json"))
    p.add_argument("--worker", choices=("rlpt", "d3rlpy"), help=argparse.SUPPRESS)
    p.add_argument("--recipe-json", help=argparse.SUPPRESS)
    args = p.parse_args()
    tree = Path(args.rlpt_tree).resolve()
    args.data = str(Path(args.data or tree / "data" / "hopper-medium-replay-v5.hdf5").resolve())
    args.recipe = str(Path(args.recipe or tree / "agents" / "iql" / "hopper-medium-replay-cpu.yaml").resolve())
    if args.worker:
        worker(args)
        return

    sys.path.insert(0, str(HERE))
    from harness import command_line, git_commit, loadavg, machine, write_result

    for label, path in (("--data", args.data), ("--recipe", args.recipe), ("--d3rlpy-python", args.d3rlpy_python),
                        ("--rlpt-python", args.rlpt_python)):
        if not Path(path).exists():
            raise SystemExit(f"{label}: {path} does not exist")
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base_env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    workers = {"rlpt": Worker("rlpt", args.rlpt_python, args, {**base_env, "PYTHONPATH": str(tree)}),
               "d3rlpy": Worker("d3rlpy", args.d3rlpy_python, args, base_env)}
    load0 = loadavg()
    t_start = time.perf_counter()
    try:
        info = {name: w.ready() for name, w in workers.items()}
        print(f"rlpt {info['rlpt']['version']} ({info['rlpt']['path']}) vs d3rlpy {info['d3rlpy']['version']}: "
              f"{args.rounds} rounds x {args.steps} updates, {args.threads} thread(s)", flush=True)
        rounds: dict[str, list[dict[str, float]]] = {"rlpt": [], "d3rlpy": []}
        for r in range(args.rounds):
            order = ["rlpt", "d3rlpy"] if r % 2 == 0 else ["d3rlpy", "rlpt"]
            tot = {name: {"n": 0, "wall": 0.0, "cpu": 0.0} for name in order}
            chunk = min(args.chunk or args.steps, args.steps)
            for start in range(0, args.steps, chunk):  # the two alternate in chunks within a round
                for name in order:
                    res = workers[name].run(min(chunk, args.steps - start))
                    for k in tot[name]:
                        tot[name][k] += res[k]
            for name, res in tot.items():
                rounds[name].append({"rate": res["n"] / res["wall"], "cpu_rate": res["n"] / max(res["cpu"], 1e-9),
                                     "seconds": res["wall"]})
            a, b = rounds["rlpt"][-1], rounds["d3rlpy"][-1]
            print(f"round {r + 1}: rlpt {a['rate']:.1f} upd/s, d3rlpy {b['rate']:.1f} upd/s, ratio "
                  f"{a['rate'] / b['rate']:.2f} (cpu-time ratio {a['cpu_rate'] / b['cpu_rate']:.2f})", flush=True)
    finally:
        for w in workers.values():
            w.close()
    med = {n: statistics.median(x["rate"] for x in rs) for n, rs in rounds.items()}
    cmed = {n: statistics.median(x["cpu_rate"] for x in rs) for n, rs in rounds.items()}
    ratio, cpu_ratio = med["rlpt"] / med["d3rlpy"], cmed["rlpt"] / cmed["d3rlpy"]
    print(f"median: rlpt {med['rlpt']:.1f} upd/s, d3rlpy {med['d3rlpy']:.1f} upd/s -> rlpt/d3rlpy {ratio:.2f} "
          f"(per CPU second {cpu_ratio:.2f}; target 2.0)")
    report = {
        "benchmark": "d3rlpy_speed", "command": command_line(),
        "machine": machine(threads_per_worker=args.threads, loadavg_at_start=load0, loadavg_at_end=loadavg()),
        "versions": {"rlpt": info["rlpt"]["version"], "rlpt_tree": str(tree), "rlpt_git": git_commit(tree),
                     "d3rlpy": info["d3rlpy"]["version"], "torch_rlpt": info["rlpt"]["torch"],
                     "torch_d3rlpy": info["d3rlpy"]["torch"], "numpy_rlpt": info["rlpt"]["numpy"],
                     "numpy_d3rlpy": info["d3rlpy"]["numpy"], "python": info["rlpt"]["python"]},
        "settings": {"data": args.data, "recipe": args.recipe, "steps_per_round": args.steps, "rounds": args.rounds,
                     "chunk": args.chunk,
                     "warmup": args.warmup, "threads": args.threads, "rows": info["rlpt"]["rows"],
                     "wall_seconds": round(time.perf_counter() - t_start, 1)},
        "configs": {"rlpt": info["rlpt"]["config"], "d3rlpy": info["d3rlpy"]["config"]},
        "rlpt_updates_per_s": round(med["rlpt"], 2), "d3rlpy_updates_per_s": round(med["d3rlpy"], 2),
        "ratio": round(ratio, 3), "rlpt_per_cpu_s": round(cmed["rlpt"], 2),
        "d3rlpy_per_cpu_s": round(cmed["d3rlpy"], 2),
        "cpu_time_ratio": round(cpu_ratio, 3), "target": 2.0, "target_met": ratio >= 2.0,
        "ratio_per_round": [round(a["rate"] / b["rate"], 3) for a, b in zip(rounds["rlpt"], rounds["d3rlpy"],
                                                                           strict=True)],
        "rounds": rounds,
        "notes": "medians of per-round updates/s; rounds alternate the two libraries (order flipped each round), one "
                 "computing at a time, so both see the same machine load; ratio = median(rlpt) / median(d3rlpy) by "
                 "wall clock, cpu_time_ratio the same per second of each worker's process CPU time. d3rlpy is "
                 "timed as sample_transition_batch + update (no logger).",
    }
    print(f"wrote {write_result(args.out, report)}")


if __name__ == "__main__":
    main()
