"""GFlowNet benchmark (docs/gfn.md): rlpt's TB vs torchgfn, OC-GFN pretraining, adaptation to new rewards.

    .venv/bin/python benchmarks/gfn.py                       # 3 seeds, defaults below
    .venv/bin/python benchmarks/gfn.py --seeds 1 --pretrain-steps 1500 --adapt-steps 1000

1. From-scratch TB on the 2-D HyperGrid of side 16 (R0=0.1, R1=0.5, R2=2; torchgfn's example: 2x256 ReLU MLP with
   a learned P_B head on the P_F trunk, Adam 1e-3 / log Z 0.1, batch 16, grad clip 1, one thread), rlpt vs
   torchgfn: training iterations/s (evaluation excluded) and the exact L1 curve. torchgfn runs in its own
   interpreter (`--torchgfn-python`, default $TORCHGFN_PYTHON or /tmp/tgfn/venv/bin/python: torchgfn pins
   numpy < 2, so it is not installed into rlpt's venv); its P_F is read on every state and scored with the same
   exact DP. Skipped when that interpreter is missing.
2. OC-GFN pretraining (reward-free): the exact success rate P(x = y | y) over all 256 outcomes.
3. Adaptation to new rewards (hypergrid R0=1e-3, 10 random sparse modes, hypergrid R0=1e-2): exact L1 and modes
   covered vs steps for OC-GFN exact conversion (0 steps), OC-GFN amortized adapter, and TB from scratch.
   Target: OC-GFN reaches the scratch run's final L1 within a third of the scratch steps.
Writes benchmarks/results/gfn.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlpt.gfn.envs import HyperGrid  # noqa: E402
from rlpt.gfn.evaluate import exact_metrics, masked_log_softmax  # noqa: E402
from rlpt.gfn.gflownet import GFlowNet  # noqa: E402
from rlpt.gfn.ocgfn import OCGFN, AmortizedTrainer, OCGFNConfig, convert_exact  # noqa: E402

TORCHGFN_SCRIPT = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from gfn.estimators import DiscretePolicyEstimator
from gfn.gflownet import TBGFlowNet
from gfn.gym import HyperGrid
from gfn.preprocessors import KHotPreprocessor
from gfn.samplers import Sampler
from gfn.utils.modules import MLP
steps, every, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(seed)
env = HyperGrid(ndim=2, height=16, reward_fn_str="original", reward_fn_kwargs={"R0": 0.1, "R1": 0.5, "R2": 2.0})
pre = KHotPreprocessor(height=16, ndim=2)
mpf = MLP(input_dim=pre.output_dim, output_dim=env.n_actions)
mpb = MLP(input_dim=pre.output_dim, output_dim=env.n_actions - 1, trunk=mpf.trunk)
pf = DiscretePolicyEstimator(mpf, env.n_actions, preprocessor=pre, is_backward=False)
pb = DiscretePolicyEstimator(mpb, env.n_actions, preprocessor=pre, is_backward=True)
gfn = TBGFlowNet(pf=pf, pb=pb, init_logZ=0.0)
sampler = Sampler(estimator=pf)
opt = torch.optim.Adam(gfn.pf_pb_parameters(), lr=1e-3)
opt.add_param_group({"params": gfn.logz_parameters(), "lr": 1e-1})
enc = torch.tensor(np.load(out + "/encodings.npy"))
train_s, tables = 0.0, {}
for it in range(1, steps + 1):
    t0 = time.perf_counter()
    traj = sampler.sample_trajectories(env, n=16, save_logprobs=False)
    loss = gfn.loss_from_trajectories(env, traj, recalculate_all_logprobs=True)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(gfn.parameters(), 1.0)
    opt.step()
    train_s += time.perf_counter() - t0
    if it % every == 0:
        with torch.no_grad():
            np.save(f"{out}/logits_{it}.npy", mpf(enc).numpy())
json.dump({"train_seconds": train_s, "steps": steps}, open(out + "/summary.json", "w"))
"""


def l1_curve_rlpt(env, steps: int, every: int, seed: int, **kw) -> dict:
    gfn = GFlowNet(env, seed=seed, **kw)
    curve, train_s = [], 0.0
    for it in range(1, steps + 1):
        t0 = time.perf_counter()
        gfn.train_step()
        train_s += time.perf_counter() - t0
        if it % every == 0:
            m = exact_metrics(env, gfn.log_pf_table())
            curve.append({"step": it, "l1": m["l1"], "modes_covered": m.get("modes_covered"),
                          "modes_found": len(gfn.seen_modes)})
    return {"curve": curve, "train_seconds": train_s, "it_per_s": steps / train_s}


def torchgfn_run(python: str, env, steps: int, every: int, seed: int) -> dict | None:
    if not python or not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/encodings.npy", env.encode(env.all_states).numpy())
        (Path(d) / "run.py").write_text(TORCHGFN_SCRIPT)
        r = subprocess.run([python, f"{d}/run.py", str(steps), str(every), str(seed), d], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return {"error": r.stderr[-2000:]}
        summary = json.loads((Path(d) / "summary.json").read_text())
        mask = env.forward_mask(env.all_states)
        curve = []
        for it in range(every, steps + 1, every):
            logits = torch.tensor(np.load(f"{d}/logits_{it}.npy"))
            m = exact_metrics(env, masked_log_softmax(logits, mask))
            curve.append({"step": it, "l1": m["l1"], "modes_covered": m.get("modes_covered")})
    return {"curve": curve, "train_seconds": summary["train_seconds"], "it_per_s": steps / summary["train_seconds"]}


def first_step_below(curve: list[dict], threshold: float) -> int | None:
    return next((c["step"] for c in curve if c["l1"] <= threshold), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--scratch-steps", type=int, default=1000, help="part 1: TB iterations (rlpt and torchgfn)")
    p.add_argument("--pretrain-steps", type=int, default=3000)
    p.add_argument("--adapt-steps", type=int, default=1500, help="part 3: scratch and amortized iterations")
    p.add_argument("--every", type=int, default=100, help="iterations between exact evaluations")
    p.add_argument("--torchgfn-python", default=os.environ.get("TORCHGFN_PYTHON", "/tmp/tgfn/venv/bin/python"))
    p.add_argument("--skip-torchgfn", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gfn.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    t_start = time.time()
    res: dict = {"command": " ".join(sys.argv), "torch_threads": 1, "args": vars(args), "seeds": {}}
    rewards = {"hypergrid_R0_1e-3": {"name": "hypergrid", "R0": 1e-3},
               "sparse10": {"name": "sparse", "k": 10, "seed": 0},
               "hypergrid_R0_1e-2": {"name": "hypergrid", "R0": 1e-2}}

    def dump() -> None:
        res["seconds"] = round(time.time() - t_start, 1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))

    for seed in range(args.seeds):
        out: dict = {}
        res["seeds"][seed] = out
        # 1. scratch TB, rlpt vs torchgfn
        env = HyperGrid(2, 16, reward={"name": "hypergrid", "R0": 0.1})
        out["tb_rlpt"] = l1_curve_rlpt(env, args.scratch_steps, args.every, seed, loss="tb", backward="learned")
        print(f"[seed {seed}] rlpt TB: {out['tb_rlpt']['it_per_s']:.1f} it/s, final L1 "
              f"{out['tb_rlpt']['curve'][-1]['l1']:.3f}", flush=True)
        if not args.skip_torchgfn:
            out["tb_torchgfn"] = torchgfn_run(args.torchgfn_python, env, args.scratch_steps, args.every, seed)
            if out["tb_torchgfn"] and "curve" in out["tb_torchgfn"]:
                print(f"[seed {seed}] torchgfn TB: {out['tb_torchgfn']['it_per_s']:.1f} it/s, final L1 "
                      f"{out['tb_torchgfn']['curve'][-1]['l1']:.3f}", flush=True)
        dump()
        # 2. OC-GFN pretraining
        base = HyperGrid(2, 16)
        oc = OCGFN(base, OCGFNConfig(seed=seed))
        curve, train_s = [], 0.0
        for it in range(1, args.pretrain_steps + 1):
            a = time.perf_counter()
            oc.train_step()
            train_s += time.perf_counter() - a
            if it % max(args.every, args.pretrain_steps // 10) == 0 or it == args.pretrain_steps:
                curve.append({"step": it, "success_rate": oc.success_rate()})
        out["pretrain"] = {"curve": curve, "train_seconds": train_s, "it_per_s": args.pretrain_steps / train_s}
        print(f"[seed {seed}] OC-GFN pretraining: success {curve[-1]['success_rate']:.4f} after "
              f"{args.pretrain_steps} steps ({train_s:.0f}s)", flush=True)
        dump()
        # 3. adaptation
        out["adapt"] = {}
        for name, spec in rewards.items():
            spec = {**spec, "seed": seed} if spec["name"] == "sparse" else spec
            env = base.with_reward(spec)
            row: dict = {"exact": exact_metrics(env, convert_exact(oc, env))}
            row["scratch"] = l1_curve_rlpt(env, args.adapt_steps, args.every, seed, loss="tb")
            am = AmortizedTrainer(oc, env, seed=seed)
            acurve = []
            for it in range(1, args.adapt_steps + 1):
                am.train_step()
                if it % args.every == 0:
                    m = exact_metrics(env, masked_log_softmax(am.logits(env.all_states),
                                                              env.forward_mask(env.all_states)))
                    acurve.append({"step": it, "l1": m["l1"], "modes_covered": m.get("modes_covered")})
            row["amortized"] = {"curve": acurve}
            final = row["scratch"]["curve"][-1]["l1"]
            row["scratch_final_l1"] = final
            row["exact_steps_to_scratch_final"] = 0 if row["exact"]["l1"] <= final else None
            row["amortized_steps_to_scratch_final"] = first_step_below(acurve, final)
            out["adapt"][name] = row
            print(f"[seed {seed}] {name}: scratch final L1 {final:.3f} at {args.adapt_steps}; exact conversion L1 "
                  f"{row['exact']['l1']:.3f} (modes {row['exact'].get('modes_covered')}); amortized final L1 "
                  f"{acurve[-1]['l1']:.3f}, reaches scratch's final at {row['amortized_steps_to_scratch_final']}",
                  flush=True)
            dump()
    dump()
    print(f"wrote {args.out} in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
