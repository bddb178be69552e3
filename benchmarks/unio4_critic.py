"""Uni-O4's discriminating experiment: is the critic, or out-of-range actions, why improvement falls below BC?

    python benchmarks/unio4_critic.py --seed 0 --arms A B C BC

From one post-BC checkpoint of a preset (the hopper-medium-replay CPU preset with OLD_PRESET's fields: the preset
as it was before the critic change), each arm runs the preset's improvement phase with OPE and
reports the true return of every OPE-scored iterate:
- A   the improvement phase as the preset has it;
- B   first `--extra-critic-steps` more critic updates at `--extra-critic-lr` with the target updated every
      step (IQL's settings), then A;
- C   A with `improve_clip_action` on (sampled improvement actions clipped to [-1, 1]);
- BC  B and C together;
- N   the critic replaced by one trained from scratch with the IQL baseline's settings (lr `--extra-critic-lr`,
      target every step, rewards normalised by 1000 / return range) for `--new-critic-steps`, then A (the
      dynamics and BC ensemble stay those of the checkpoint); NC: N and C.
Before each arm it records every BC member's AM-Q (common random numbers: the same start states and model noise
for every member and arm) and the same members' true returns, so the critic's view of the BC policies is seen
before and after the extra training. Results: `--out` (one JSON, rewritten after every arm).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import command_line, machine, set_threads, versions, write_result

from rlpt.agents.base import Agent, agent_class
from rlpt.agents.core import generator_for
from rlpt.agents.unio4 import amq_score
from rlpt.envs import make_env
from rlpt.train import _load_dataset, load_recipe
from rlpt.utils import set_seed, spearman

# The hopper-medium-replay CPU preset before the critic change (the experiment's starting point).
OLD_PRESET = {"critic_steps": 20000, "critic_lr": 1e-4, "target_update_interval": 2, "normalize_reward": False,
              "bc_steps": 10000, "bc_lr": 1e-4, "improve_steps": 500, "improve_clip_action": False,
              "clip_decay_steps": 10, "ope_interval": 50, "ope_start_states": 128, "ope_horizon": 200,
              "ope_common_random_numbers": False, "ope_noise_repeats": 0, "ope_accept_margin": 0.0,
              "hand_off_policy": "reference"}


def bc_member_report(agent, ds, eval_env, norm, episodes: int, n_start: int, horizon: int, seed: int) -> dict:
    """AM-Q of every BC member with common random numbers, and their true returns."""
    data, _, _ = agent._prepare(ds)
    idx = np.random.default_rng(seed + 99).choice(data.transition_indices(), size=n_start)
    start = agent._encode_chunked(agent._batch(data, idx)["observations"])
    amq = [amq_score(agent.policies.member(i), agent.dynamics, agent.critic.q, start, horizon, agent.normalizer,
                     agent.termination_fn, generator_for(agent.device, seed + 7919))
           for i in range(agent.config.ensemble_size)]
    true = [norm(agent.member_return(i, eval_env, episodes)) for i in range(agent.config.ensemble_size)]
    return {"amq": amq, "true_return": true}


def run_arm(arm: str, ck: Path, ds, eval_env, norm, args) -> dict:
    agent = Agent.load(ck)
    set_seed(args.seed)
    out: dict = {"arm": arm}
    if "N" in arm:
        from rlpt.agents.core import return_range_scale
        from rlpt.nets.critics import IQLCritic

        c = agent.config
        c.normalize_reward, c.critic_lr, c.target_update_interval = True, args.extra_critic_lr, 1
        agent.critic = IQLCritic(agent.critic.q.obs_dim, agent.critic.q.act_dim, c.q_hidden, c.v_hidden, c.critic_lr,
                                 c.expectile, c.gamma, c.tau, 1).to(agent.device)
        agent.reward_factor, agent._data = return_range_scale(ds), None  # re-make the training view
    if "B" in arm or "N" in arm:
        data, train_idx, hold_idx = agent._prepare(ds)
        for opt in (agent.critic.q_opt, agent.critic.v_opt):
            for g in opt.param_groups:
                g["lr"] = args.extra_critic_lr
        agent.critic.target_update_interval = 1
        t0 = time.time()
        losses = []
        n_steps = args.new_critic_steps if "N" in arm else args.extra_critic_steps
        for k in range(n_steps):
            m = agent._critic_update(data, train_idx, hold_idx, k)
            if (k + 1) % 1000 == 0:
                losses.append([k + 1, m["train/q_loss"], m["train/q_mean"]])
                print(f"  [{arm}] extra critic step {k + 1}: q_loss {m['train/q_loss']:.3f} "
                      f"q_mean {m['train/q_mean']:.1f}", flush=True)
        out["extra_critic"] = {"steps": n_steps, "lr": args.extra_critic_lr, "from_scratch": "N" in arm,
                               "normalize_reward": "N" in arm, "target_update_interval": 1, "curve": losses,
                               "seconds": time.time() - t0}
    out["bc_members"] = bc_member_report(agent, ds, eval_env, norm, args.episodes, args.amq_start_states,
                                         args.amq_horizon, args.seed)
    if "C" in arm:
        agent.config.improve_clip_action = True
    for key, value in json.loads(args.ope_overrides).items():  # OPE settings of the improvement phase
        setattr(agent.config, key, value)
    agent.config.report_true_returns, agent.config.report_episodes = True, args.episodes
    t0 = time.time()
    agent.fit(ds, n_steps=10**9, eval_env=eval_env)
    h = np.array(agent.ope_history)
    h[:, 4] = [norm(r) for r in h[:, 4]]
    best_bc = max(out["bc_members"]["true_return"])
    out.update({
        "iterates": h.tolist(),  # [offline step, member, AM-Q, accepted, true return (normalised)]
        "spearman": spearman(h[:, 2], h[:, 4]), "accepted": int(h[:, 3].sum()),
        "iterate_return_mean": float(np.mean(h[:, 4])), "iterate_return_max": float(np.max(h[:, 4])),
        "share_above_best_bc": float(np.mean(h[:, 4] > best_bc)),
        "handed_off": {"member": agent.selected,
                       "return": norm(agent.member_return(agent.selected, eval_env, 10, reference=True))},
        "improve_seconds": time.time() - t0})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="unio4/hopper-medium-replay-cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", nargs="+", default=["A", "B", "C", "BC"])
    p.add_argument("--extra-critic-steps", type=int, default=40_000)
    p.add_argument("--extra-critic-lr", type=float, default=3e-4)
    p.add_argument("--new-critic-steps", type=int, default=25_000)
    p.add_argument("--ope-overrides", default="{}", help="JSON of UniO4Config OPE fields for the improvement phase, "
                                                         "e.g. '{\"ope_horizon\": 1000}'")
    p.add_argument("--episodes", type=int, default=5, help="episodes per true-return estimate")
    p.add_argument("--amq-start-states", type=int, default=512)
    p.add_argument("--amq-horizon", type=int, default=200)
    p.add_argument("--cache", default="runs/unio4_critic_cache")
    p.add_argument("--out", default="benchmarks/results/unio4_critic.json")
    args = p.parse_args()
    set_threads(1)
    recipe = load_recipe(args.preset)
    ds = _load_dataset(recipe, Path("data"), quiet=True)
    refs = (float(ds.metadata["ref_min_score"]), float(ds.metadata["ref_max_score"]))

    def norm(r: float) -> float:
        return 100.0 * (r - refs[0]) / (refs[1] - refs[0]) if math.isfinite(r) else r

    config = {**recipe.config, **OLD_PRESET, "seed": args.seed}
    env, eval_env = make_env(recipe.env, seed=args.seed), make_env(recipe.env, seed=args.seed + 1)
    ck = Path(args.cache) / f"{recipe.dataset}_seed{args.seed}"
    if not ck.exists():
        set_seed(args.seed)
        cfg = agent_class("unio4").config_class.from_dict(config)
        agent = cfg.create(env.observation_space, env.action_space)
        t0 = time.time()
        agent.fit(ds, n_steps=cfg.critic_steps + cfg.dynamics_steps + cfg.bc_steps)
        agent.save(ck)
        print(f"post-BC checkpoint {ck} in {time.time() - t0:.0f} s", flush=True)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results.update({"command": command_line(), "ope_overrides": json.loads(args.ope_overrides),
                    "preset": args.preset, "config": config, "dataset": recipe.dataset, "seed": args.seed,
                    "machine": platform.platform(), "torch": torch.__version__,  # kept: older files have them
                    "machine_info": machine(), "versions": versions()})
    results.setdefault("arms", {})
    for arm in args.arms:
        t0 = time.time()
        res = run_arm(arm, ck, ds, eval_env, norm, args)
        res["seconds"] = time.time() - t0
        results["arms"][arm] = res
        write_result(out_path, results)
        print(f"arm {arm}: BC members {np.round(res['bc_members']['true_return'], 1)} "
              f"AM-Q {np.round(res['bc_members']['amq'], 1)} | iterates mean {res['iterate_return_mean']:.1f} "
              f"max {res['iterate_return_max']:.1f} above best BC {res['share_above_best_bc']:.0%} | "
              f"rho {res['spearman']:.2f} accepted {res['accepted']} | handed off {res['handed_off']['return']:.1f}"
              f" ({res['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
