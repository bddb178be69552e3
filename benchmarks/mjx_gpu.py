"""MJX on one GPU: env steps/s against C MuJoCo on the same machine, and PPO on MJX Hopper to a return.

Usage: python benchmarks/mjx_gpu.py [--budget 540] [--worlds 1024 4096 16384] [--seconds 10]
       [--sections cpu,hopper,tabletop,ppo] [--ppo-seconds 180] [--ppo-envs 2048]
       [--out benchmarks/results/mjx_gpu.json]
On the GPU machines: bash benchmarks/device/mjx_gpu.sh (installs the carried wheels first).

Sections (each result is written to the JSON as soon as it is measured, so a run cut short keeps
what it finished; sections that would not fit the remaining --budget are recorded as skipped):
- cpu: C MuJoCo through Gymnasium, one process on one core (Hopper-v5 with random actions; the
  tabletop push env with random actions), and a 16-process Gymnasium AsyncVectorEnv of Hopper-v5;
- hopper: `make_vec_env("mujoco/Hopper-v5", N, backend="mjx")` at each N of --worlds: first-call
  time (trace + compile) and env steps/s over --seconds of steps with random torch actions made on
  the GPU, results read back as torch tensors (the full path an agent uses, DLPack included);
- tabletop: the same for tabletop/push (20 physics steps per env step, contacts, IK);
- ppo: a compact batched PPO (torch, on the GPU) on MJX Hopper for --ppo-seconds: wall-clock time
  until the mean return of finished episodes first reaches 1,000 and 2,000 (null if not reached).
Ratios are MJX steps/s over the one-core and 16-process CPU rates measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU with JAX

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in ("jax", "jaxlib", "mujoco", "mujoco-mjx", "gymnasium", "torch", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "processor": platform.processor()}
    try:
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                 if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                             "--format=csv,noheader"], capture_output=True, text=True,
                                            timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


class Results:
    """The result JSON, rewritten atomically after every measurement."""

    def __init__(self, path: Path, args: argparse.Namespace):
        self.path = path
        self.data = {"benchmark": "mjx_gpu", "command": " ".join([sys.executable, *sys.argv]),
                     "args": vars(args), "machine": machine(), "versions": versions(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": {}, "skipped": []}
        self.write()

    def put(self, key: str, value) -> None:
        self.data["results"][key] = value
        self.data["elapsed_s"] = round(elapsed(), 1)
        self.write()
        print(f"[{elapsed():6.0f}s] {key}: {json.dumps(value)}", flush=True)

    def skip(self, what: str, why: str) -> None:
        self.data["skipped"].append({"what": what, "why": why})
        self.write()
        print(f"[{elapsed():6.0f}s] skipped {what}: {why}", flush=True)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)


# ------------------------------------------------------------------------------------------ CPU
def cpu_single(spec: str, seconds: float) -> dict:
    from rlpt.envs import make_env

    env = make_env(spec, seed=0)
    env.reset(seed=0)
    env.action_space.seed(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated or truncated:
            env.reset()
    dt = time.perf_counter() - start
    env.close()
    return {"env_steps_per_s": steps / dt, "steps": steps, "seconds": dt}


def cpu_async(spec: str, n: int, seconds: float) -> dict:
    from rlpt.envs import make_vec_env

    envs = make_vec_env(spec, n, vectorization="async", seed=0, context="fork")
    envs.reset(seed=0)
    envs.action_space.seed(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        envs.step(envs.action_space.sample())
        steps += n
    dt = time.perf_counter() - start
    envs.close()
    return {"env_steps_per_s": steps / dt, "processes": n, "steps": steps, "seconds": dt}


# ------------------------------------------------------------------------------------------ MJX
def mjx_rate(spec: str, n: int, seconds: float, device: torch.device) -> dict:
    from rlpt.envs import make_vec_env

    envs = make_vec_env(spec, n, backend="mjx", device=device, seed=0)
    low = torch.as_tensor(envs.single_action_space.low, device=envs.device)
    high = torch.as_tensor(envs.single_action_space.high, device=envs.device)
    gen = torch.Generator(device=envs.device).manual_seed(0)

    def actions():
        return low + (high - low) * torch.rand((n, low.shape[0]), generator=gen, device=envs.device)

    t = time.perf_counter()
    envs.reset(seed=0)
    obs, *_ = envs.step(actions())
    float(obs.sum())  # wait for the result
    first_call = time.perf_counter() - t
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        obs, reward, terminated, truncated, info = envs.step(actions())
        steps += 1
    float(reward.sum())
    dt = time.perf_counter() - start
    envs.close()
    return {"worlds": n, "env_steps_per_s": steps * n / dt, "calls_per_s": steps / dt,
            "first_call_s": round(first_call, 2), "seconds": dt, "device": str(envs.device)}


# ------------------------------------------------------------------------------------------ PPO
def ppo(seconds: float, device: torch.device, num_envs: int = 2048, horizon: int = 32, epochs: int = 4,
        minibatches: int = 8, seed: int = 0) -> dict:
    """Clipped PPO with GAE and observation normalisation on MJX Hopper; everything stays on the device."""
    from torch import nn

    from rlpt.envs import make_vec_env

    torch.manual_seed(seed)
    envs = make_vec_env("mujoco/Hopper-v5", num_envs, backend="mjx", device=device, seed=seed)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    dev = envs.device

    def mlp(out: int) -> nn.Module:
        return nn.Sequential(nn.Linear(obs_dim, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, out))

    actor, critic = mlp(act_dim).to(dev), mlp(1).to(dev)
    log_std = nn.Parameter(torch.full((act_dim,), -0.5, device=dev))
    opt = torch.optim.Adam([*actor.parameters(), *critic.parameters(), log_std], lr=3e-4)
    mean, var, count = torch.zeros(obs_dim, device=dev), torch.ones(obs_dim, device=dev), 1e-4
    gamma, lam, clip = 0.99, 0.95, 0.2

    def norm(o):
        return torch.clamp((o - mean) / torch.sqrt(var + 1e-8), -10, 10)

    obs, _ = envs.reset(seed=seed)
    ep_ret = torch.zeros(num_envs, device=dev)
    curve, reached = [], {"1000": None, "2000": None}
    start = time.perf_counter()
    env_steps = updates = 0
    while time.perf_counter() - start < seconds:
        OBS = torch.zeros(horizon, num_envs, obs_dim, device=dev)  # (T, N, obs)
        ACT = torch.zeros(horizon, num_envs, act_dim, device=dev)
        LP, R, V = (torch.zeros(horizon, num_envs, device=dev) for _ in range(3))
        D, VNEXT = torch.zeros(horizon, num_envs, device=dev), torch.zeros(horizon, num_envs, device=dev)
        finished = []
        with torch.no_grad():
            batch_mean, batch_var = obs.mean(0), obs.var(0)  # running observation statistics
            n_b = obs.shape[0]
            delta, tot = batch_mean - mean, count + n_b
            mean = mean + delta * n_b / tot
            var = (var * count + batch_var * n_b + delta**2 * count * n_b / tot) / tot
            count = tot
            for t in range(horizon):
                o = norm(obs)
                dist = torch.distributions.Normal(actor(o), log_std.exp())
                a = dist.sample()
                nxt, r, term, trunc, info = envs.step(a.clamp(-1, 1))
                OBS[t], ACT[t], LP[t], V[t], R[t] = o, a, dist.log_prob(a).sum(-1), critic(o).squeeze(-1), r
                done = term | trunc
                # bootstrap through truncations from the final observation, not through terminations
                final = torch.where(info["_final_obs"][:, None], info["final_obs"], nxt)
                VNEXT[t] = critic(norm(final)).squeeze(-1) * (~term).float()
                D[t] = done.float()
                ep_ret += r
                if done.any():
                    finished.append(ep_ret[done])
                    ep_ret = torch.where(done, torch.zeros_like(ep_ret), ep_ret)
                obs = nxt
            adv = torch.zeros(num_envs, device=dev)
            ADV = torch.zeros(horizon, num_envs, device=dev)
            for t in reversed(range(horizon)):
                delta_t = R[t] + gamma * VNEXT[t] - V[t]
                adv = delta_t + gamma * lam * (1 - D[t]) * adv
                ADV[t] = adv
            RET = ADV + V
        env_steps += horizon * num_envs
        b_o, b_a, b_lp = OBS.reshape(-1, obs_dim), ACT.reshape(-1, act_dim), LP.reshape(-1)
        b_adv, b_ret = ADV.reshape(-1), RET.reshape(-1)
        b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)
        size = b_o.shape[0] // minibatches
        for _ in range(epochs):
            perm = torch.randperm(b_o.shape[0], device=dev)
            for k in range(minibatches):
                idx = perm[k * size:(k + 1) * size]
                dist = torch.distributions.Normal(actor(b_o[idx]), log_std.exp())
                ratio = (dist.log_prob(b_a[idx]).sum(-1) - b_lp[idx]).exp()
                pg = -torch.min(ratio * b_adv[idx], ratio.clamp(1 - clip, 1 + clip) * b_adv[idx]).mean()
                v_loss = 0.5 * (critic(b_o[idx]).squeeze(-1) - b_ret[idx]).pow(2).mean()
                loss = pg + 0.5 * v_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_([*actor.parameters(), *critic.parameters(), log_std], 0.5)
                opt.step()
                updates += 1
        if finished:
            rets = torch.cat(finished)
            mean_ret = float(rets.mean())
            wall = time.perf_counter() - start
            curve.append([round(wall, 1), env_steps, round(mean_ret, 1), int(rets.numel())])
            for level in (1000, 2000):
                if reached[str(level)] is None and mean_ret >= level:
                    reached[str(level)] = {"seconds": round(wall, 1), "env_steps": env_steps}
    wall = time.perf_counter() - start
    envs.close()
    return {"num_envs": num_envs, "horizon": horizon, "epochs": epochs, "minibatches": minibatches,
            "seconds": round(wall, 1), "env_steps": env_steps, "updates": updates,
            "env_steps_per_s_with_learning": env_steps / wall, "reached": reached,
            "final_mean_return": curve[-1][2] if curve else None,
            "curve_wall_s_steps_return_episodes": curve[-60:]}


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run (sections that "
                   "would not fit are skipped)")
    p.add_argument("--worlds", type=int, nargs="+", default=[4096, 1024, 16384])
    p.add_argument("--tabletop-worlds", type=int, nargs="+", default=[4096, 1024])
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time per rate")
    p.add_argument("--ppo-seconds", type=float, default=180.0)
    p.add_argument("--ppo-envs", type=int, default=2048, help="worlds PPO collects from")
    p.add_argument("--sections", default="cpu,hopper,tabletop,ppo")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mjx_gpu.json"))
    args = p.parse_args()
    sections = set(args.sections.split(","))
    res = Results(Path(args.out), args)

    def fits(what: str, need: float) -> bool:
        left = args.budget - elapsed()
        if left < need:
            res.skip(what, f"needs ~{need:.0f} s, {left:.0f} s of the budget left")
            return False
        return True

    cpu = {}
    if "cpu" in sections:
        cpu["hopper_1core"] = cpu_single("mujoco/Hopper-v5", args.seconds)
        res.put("cpu/hopper/1core", cpu["hopper_1core"])
        cpu["hopper_async16"] = cpu_async("mujoco/Hopper-v5", 16, args.seconds)
        res.put("cpu/hopper/async16", cpu["hopper_async16"])
        cpu["push_1core"] = cpu_single("tabletop/push", args.seconds)
        res.put("cpu/push/1core", cpu["push_1core"])

    # JAX starts only now: the 16-process CPU baseline forks, and forking a process that runs JAX can deadlock.
    from rlpt.envs.mjx import enable_compilation_cache
    from rlpt.envs.mjx.vector import jax_platform, resolve_mjx_device

    enable_compilation_cache()
    device = resolve_mjx_device(args.device)
    res.data["jax_platform"] = jax_platform()
    res.data["torch_device"] = str(device)
    res.write()

    def with_ratios(r: dict, one: str, many: str | None) -> dict:
        if one in cpu:
            r["x_vs_1core"] = round(r["env_steps_per_s"] / cpu[one]["env_steps_per_s"], 1)
        if many and many in cpu:
            r["x_vs_async16"] = round(r["env_steps_per_s"] / cpu[many]["env_steps_per_s"], 1)
        return r

    if "hopper" in sections:
        for n in args.worlds:
            if fits(f"hopper/{n}", 90 + args.seconds):
                res.put(f"mjx/hopper/{n}", with_ratios(mjx_rate("mujoco/Hopper-v5", n, args.seconds, device),
                                                       "hopper_1core", "hopper_async16"))
    if "tabletop" in sections:
        for n in args.tabletop_worlds:
            if fits(f"tabletop-push/{n}", 150 + args.seconds):
                res.put(f"mjx/push/{n}", with_ratios(mjx_rate("tabletop/push", n, args.seconds, device),
                                                     "push_1core", None))
    if "ppo" in sections:
        left = args.budget - elapsed() - 30
        if left >= 60:
            res.put("ppo/hopper", ppo(min(args.ppo_seconds, left), device, num_envs=args.ppo_envs))
        else:
            res.skip("ppo/hopper", f"{left:.0f} s of the budget left")
    res.data["finished"] = True
    res.put("total_elapsed_s", round(elapsed(), 1))


if __name__ == "__main__":
    main()
