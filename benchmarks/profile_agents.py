"""Where an rlpt update's CPU time goes: torch.profiler breakdown of IQL and Cal-QL updates beside the bare loops of
benchmarks/agent_speed.py, plus A/B timings of cheap fixes (Adam implementations, bf16 autocast, torch.compile).

Usage: python benchmarks/profile_agents.py [--agents iql calql] [--updates 30] [--seconds 3] [--rounds 3]
       [--threads 1] [--compile] [--out benchmarks/results/profile_agents.json]
Takes ~3-5 min on one thread (add ~1-3 min with --compile).

1. Profile: `--updates` updates of each variant (rlpt `agent.fit(ds, 1)` per update, and the bare step) under
   torch.profiler after warm-up. CPU time (process time, so other jobs drop out) per update is given without and
   with the profiler. Self CPU time of every aten op is summed into categories: matmul (mm, addmm, bmm, baddbmm),
   optimizer (ops inside `Optimizer.step`/`zero_grad`), sampling/indexing (index, gather, randint,
   from_numpy copies), scalar syncs (`item` / `_local_scalar_dense`), and other ops (elementwise, reductions,
   autograd bookkeeping). shares are of the profiled wall time (the profiler times ops by wall
   clock); "outside aten ops" = profiled wall time minus the summed self time of all ops: the Python
   interpreter, the dispatcher and the profiler's own cost (so it is an upper bound on Python overhead). A lower
   bound: aten calls per update x the CPU time of one trivial aten call from Python (dispatch_floor).
2. A/B (alternating rounds, medians of updates per CPU second; the same agent/loop before and after the change):
   rlpt with its Adam optimizers rebuilt as `foreach=True` and as `fused=True`; the bare loop under
   `torch.autocast("cpu", torch.bfloat16)`; with --compile, the bare loop's networks through `torch.compile`.
Synthetic Hopper-shaped data (agent_speed's), the CPU preset's shapes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from agent_speed import PRESETS, BareData, bare_calql, bare_iql, synthetic_hopper
from harness import add_threads_arg, command_line, machine, set_threads, versions, write_result
from torch.profiler import ProfilerActivity, profile

from rlpt.agents.calql import CalQLConfig
from rlpt.agents.iql import IQLConfig

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
SAMPLING = {"aten::index", "aten::gather", "aten::randint", "aten::random_", "aten::from_numpy", "aten::copy_",
            "aten::to", "aten::_to_copy", "aten::index_select"}
SYNC = {"aten::item", "aten::_local_scalar_dense"}


def build(name: str, ds) -> tuple[Any, Callable[[], None], Callable[[], None]]:
    """(rlpt agent, one rlpt update, one bare update) for `name` in iql | calql."""
    config_cls, bare_fn = {"iql": (IQLConfig, bare_iql), "calql": (CalQLConfig, bare_calql)}[name]
    cfg = config_cls(**PRESETS["cpu"][name])
    env = gym.make("Hopper-v5")
    agent = cfg.create(env.observation_space, env.action_space, device="cpu")
    env.close()
    bare = bare_fn(cfg, BareData(ds, torch.device("cpu"), gamma=cfg.discount if name == "calql" else None))
    return agent, lambda: agent.fit(ds, 1), bare


def breakdown(step: Callable[[], None], updates: int) -> dict[str, Any]:
    """Profile `updates` calls of `step`; CPU milliseconds per update by category and the top ops."""
    for _ in range(3):
        step()
    c0 = time.process_time()
    for _ in range(updates):
        step()
    plain = (time.process_time() - c0) / updates * 1e3
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            step()
    wall = (time.perf_counter() - t0) / updates * 1e3  # the profiler times ops by wall clock: compare like with like
    events = prof.events()
    opt_total = sum(e.cpu_time_total for e in events if e.name.startswith("Optimizer.")) / 1e3 / updates
    # ops called (at any depth) inside the optimizer's step/zero_grad ranges: attribute by time interval
    ranges = [(e.time_range.start, e.time_range.end) for e in events
              if e.name.startswith("Optimizer.step") or e.name.startswith("Optimizer.zero_grad")]
    cats = {"matmul": 0.0, "optimizer": 0.0, "sampling/indexing": 0.0, "scalar syncs (.item)": 0.0, "other ops": 0.0}
    calls = {k: 0 for k in cats}
    for e in events:
        if not e.name.startswith("aten::"):
            continue
        self_ms = e.self_cpu_time_total / 1e3
        start = e.time_range.start
        if any(a <= start <= b for a, b in ranges):
            cat = "optimizer"
        elif e.name in MATMUL:
            cat = "matmul"
        elif e.name in SYNC:
            cat = "scalar syncs (.item)"
        elif e.name in SAMPLING:
            cat = "sampling/indexing"
        else:
            cat = "other ops"
        cats[cat] += self_ms
        calls[cat] += 1
    per = {k: round(v / updates / wall, 4) for k, v in cats.items()}
    per["outside aten ops (Python, dispatcher, profiler)"] = round(max(1 - sum(cats.values()) / updates / wall, 0), 4)
    top = sorted(prof.key_averages(), key=lambda a: a.self_cpu_time_total, reverse=True)[:12]
    n_calls = sum(calls.values()) / updates
    return {"cpu_ms_per_update": round(plain, 3), "profiled_wall_ms_per_update": round(wall, 3),
            "optimizer_ranges_share": round(opt_total / wall, 4), "share_of_profiled_wall": per,
            "dispatch_floor_ms_per_update": round(n_calls * dispatch_floor_us() / 1e3, 3),
            "op_calls_per_update": {k: round(v / updates, 1) for k, v in calls.items()},
            "aten_calls_per_update": round(sum(calls.values()) / updates, 1),
            "top_ops": [{"op": a.key, "self_ms_per_update": round(a.self_cpu_time_total / 1e3 / updates, 3),
                         "calls_per_update": round(a.count / updates, 2)} for a in top]}


def dispatch_floor_us() -> float:
    """CPU microseconds of one trivial aten call from Python (a 1-element add): the per-op floor of eager mode."""
    x = torch.ones(1)
    for _ in range(100):
        torch.add(x, x)
    c0, n = time.process_time(), 20_000
    for _ in range(n):
        torch.add(x, x)
    return (time.process_time() - c0) / n * 1e6


def rebuild_adam(agent: Any, **flags: Any) -> None:
    """Replace every torch.optim.Adam attribute of `agent` (and of its critic) by one with `flags`, same groups."""
    impl_keys = ("foreach", "fused", "capturable", "differentiable")

    def again(opt: torch.optim.Adam) -> torch.optim.Adam:
        return torch.optim.Adam([{k: v for k, v in g.items() if k not in impl_keys} for g in opt.param_groups],
                                **flags)

    for owner in (agent, getattr(agent, "critic", None)):
        for key, value in list(vars(owner).items()) if owner is not None else []:
            if isinstance(value, torch.optim.Adam):
                setattr(owner, key, again(value))
            elif isinstance(value, dict):  # optimizers kept in a dict
                for k, opt in value.items():
                    if isinstance(opt, torch.optim.Adam):
                        value[k] = again(opt)


def ab(variants: dict[str, Callable[[], None]], seconds: float, rounds: int) -> dict[str, float]:
    """Median updates per CPU second of each variant over alternating rounds."""
    for fn in variants.values():
        for _ in range(3):
            fn()
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            n, c0 = 0, time.process_time()
            while time.process_time() - c0 < seconds:
                fn()
                n += 1
            rates[name].append(n / (time.process_time() - c0))
    return {k: round(statistics.median(v), 2) for k, v in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", nargs="+", choices=("iql", "calql"), default=["iql", "calql"])
    p.add_argument("--updates", type=int, default=30, help="profiled updates per variant")
    p.add_argument("--seconds", type=float, default=3.0, help="CPU seconds per A/B measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows-data", type=int, default=20_000)
    p.add_argument("--compile", action="store_true", help="also time the bare loop with torch.compile'd networks")
    add_threads_arg(p)
    p.add_argument("--out", default="profile_agents")
    args = p.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    ds = synthetic_hopper(args.rows_data, seed=0)
    report: dict[str, Any] = {"benchmark": "profile_agents", "command": command_line(), "machine": machine(),
                              "versions": versions(), "settings": vars(args), "agents": {}}
    for name in args.agents:
        agent, rlpt_step, bare_step = build(name, ds)
        res: dict[str, Any] = {"profile": {"rlpt": breakdown(rlpt_step, args.updates),
                                           "bare": breakdown(bare_step, args.updates)}}
        for v, b in res["profile"].items():
            print(f"\n{name} {v}: {b['cpu_ms_per_update']:.2f} CPU ms/update unprofiled; "
                  f"{b['aten_calls_per_update']:.0f} aten calls/update (>= {b['dispatch_floor_ms_per_update']:.2f} ms "
                  f"of dispatch at this CPU's per-op floor); Optimizer.step+zero_grad incl. Python "
                  f"{100 * b['optimizer_ranges_share']:.0f}%")
            for k, sh in b["share_of_profiled_wall"].items():
                print(f"  {k:<50}{100 * sh:>6.1f}%")
            print("  top ops: " + ", ".join(f"{t['op']} {t['self_ms_per_update']:.2f}" for t in b["top_ops"][:8]))
        # A/B: the optimizer implementation inside rlpt's own update
        a_fe, step_fe, _ = build(name, ds)
        rebuild_adam(a_fe, foreach=True)
        a_fu, step_fu, _ = build(name, ds)
        rebuild_adam(a_fu, fused=True)
        _, _, bare2 = build(name, ds)

        def bare_bf16(step=bare2) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                step()

        variants = {"rlpt": rlpt_step, "rlpt_adam_foreach": step_fe, "rlpt_adam_fused": step_fu, "bare": bare_step,
                    "bare_bf16_autocast": bare_bf16}
        if args.compile:
            variants["bare_compiled"] = compiled_bare(name, ds)
        rates = ab(variants, args.seconds, args.rounds)
        res["ab_updates_per_cpu_s"] = rates
        res["ab_ratios"] = {k: round(v / rates["rlpt" if k.startswith("rlpt") else "bare"], 3)
                            for k, v in rates.items()}
        print(f"{name} A/B updates per CPU second: " + ", ".join(f"{k} {v} ({res['ab_ratios'][k]:.2f}x)"
                                                                   for k, v in rates.items()))
        report["agents"][name] = res
    print(f"wrote {write_result(args.out, report)}")


def compiled_bare(name: str, ds) -> Callable[[], None]:
    """The bare loop with its nn.Sequential networks wrapped by torch.compile (compiled at the first calls)."""
    import agent_speed
    import torch._dynamo

    # every network shares nn.Sequential.forward's code, and Cal-QL calls them at two batch sizes: allow the
    # recompiles instead of falling back to eager after the default limit of 8
    torch._dynamo.config.recompile_limit = 64
    orig = agent_speed.mlp

    def compiled_mlp(*a, **k):
        net = orig(*a, **k)
        net.forward = torch.compile(net.forward, dynamic=False)
        return net

    agent_speed.mlp = compiled_mlp
    try:
        _, _, step = build(name, ds)
    finally:
        agent_speed.mlp = orig
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    print(f"  torch.compile warm-up {time.perf_counter() - t0:.0f} s", flush=True)
    return step


if __name__ == "__main__":
    main()
