"""The `rlpt` command: `rlpt <noun> <verb>`. Run `rlpt --help` or `rlpt <noun> --help`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from rlpt.config import apply_overrides, config_flags, flag_overrides, load_yaml
from rlpt.errors import ConfigError, RlptError


def data_dir() -> Path:
    """Where `rlpt data make` writes by default: $RLPT_DATA_DIR, else ./data."""
    return Path(os.environ.get("RLPT_DATA_DIR", "data"))


def _print_json(obj) -> None:
    from rlpt.utils import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2))


# ----------------------------------------------------------------------------- env
def cmd_env_list(args) -> int:
    from rlpt.envs import list_envs

    for spec in list_envs():
        print(f"{spec.name:<24} {spec.id:<28} {spec.description}")
    return 0


def cmd_env_check(args) -> int:
    from rlpt.envs import check_env

    video = args.video
    if video is None and args.pixels:
        video = str(Path("runs") / "env_check" / f"{args.spec.replace('/', '_')}.mp4")
    report = check_env(args.spec, pixels=args.pixels, episodes=args.episodes, video_path=video,
                       **({"image_size": args.image_size} if args.pixels else {}))
    _print_json(report)
    if not report.get("ok", False):
        failed = [k for k, v in report.get("checks", {}).items() if not v.get("passed")]
        print(f"FAILED: {args.spec} did not pass {', '.join(failed) or 'the checks'}", file=sys.stderr)
        return 1
    print(f"OK: {args.spec} passed gymnasium's and SB3's env checkers" + (f"; video: {report.get('video')}"
                                                                          if report.get("video") else ""))
    return 0


# ----------------------------------------------------------------------------- data
def cmd_data_make(args) -> int:
    from rlpt.collect.generate import is_stale, make_dataset
    from rlpt.data import load_d4rl, save_d4rl

    out = Path(args.out) if args.out else data_dir() / f"{args.name}.hdf5"
    if out.exists() and not args.force:
        why = is_stale(load_d4rl(out, mmap=True))
        if why is None:
            print(f"{out} exists; reusing it (pass --force to regenerate)")
            return 0
        print(f"regenerating {out}: {why}")
    t0 = time.time()
    ds = make_dataset(args.name, size=args.size, seed=args.seed, images=args.images, quiet=args.quiet or None,
                      backend=args.backend, n_envs=args.num_envs, device=args.device)
    save_d4rl(ds, out)
    print(f"wrote {out}: {len(ds)} transitions, {ds.num_episodes} episodes in {time.time() - t0:.1f}s")
    return 0


def dataset_info(path: str) -> dict:
    from rlpt.data import dataset_normalized_score, load_d4rl

    ds = load_d4rl(path, mmap=True)
    info = {"file": str(path), "size_mb": round(os.path.getsize(path) / 2**20, 2), **ds.summary()}
    returns = ds.episode_returns()
    try:
        scores = dataset_normalized_score(ds, returns)
        info["normalized_score_mean"] = float(scores.mean())
        info["normalized_score_std"] = float(scores.std())
        info["ref_min_score"] = ds.metadata.get("ref_min_score")
        info["ref_max_score"] = ds.metadata.get("ref_max_score")
    except RlptError as e:
        info["normalized_score_mean"] = None
        info["normalized_score_note"] = str(e)
    if "success" in ds.infos:
        b = ds.episode_bounds()
        info["success_rate"] = float(sum(ds.infos["success"][s:e].any() for s, e in zip(b.starts, b.ends,
                                                                                       strict=True)) / len(b))
    keep = ("name", "env_id", "kind", "seed", "rlpt_version", "content_hash", "generation_seconds")
    info["metadata"] = {k: ds.metadata[k] for k in keep if k in ds.metadata}
    return info


def cmd_data_info(args) -> int:
    info = dataset_info(args.file)
    if args.json:
        _print_json(info)
        return 0
    print(f"{info['file']}  ({info['size_mb']} MB)")
    print(f"  transitions {info['transitions']:,}  episodes {info['episodes']:,}  "
          f"obs {tuple(info['obs_shape'])}  act_dim {info['act_dim']}")
    print(f"  terminals {info['terminals']:,}  timeouts {info['timeouts']:,}  "
          f"mean episode length {info['episode_length_mean']:.1f}")
    print(f"  return mean {info['return_mean']:.1f} ± {info['return_std']:.1f}  "
          f"[min {info['return_min']:.1f}, max {info['return_max']:.1f}]")
    if info.get("normalized_score_mean") is not None:
        print(f"  normalized score {info['normalized_score_mean']:.1f} ± {info['normalized_score_std']:.1f}  "
              f"(refs: random {info['ref_min_score']:.1f}, expert {info['ref_max_score']:.1f})")
    else:
        print(f"  normalized score: n/a ({info.get('normalized_score_note')})")
    if "success_rate" in info:
        print(f"  episode success rate {info['success_rate']:.2f}")
    for k, v in info["metadata"].items():
        print(f"  {k}: {v}")
    return 0


def cmd_data_convert(args) -> int:
    from rlpt.data import convert

    out = convert(args.src, args.dst)
    print(f"wrote {out}")
    return 0


def cmd_data_train_behavior(args) -> int:
    import torch

    from rlpt.collect.behavior import BEHAVIOR_DIR, train_behavior

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else BEHAVIOR_DIR / args.env
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    train_behavior(args.env, args.steps, args.snapshot_every, out, seed=args.seed, algo=args.algo, log=log)
    (out / "train.log").write_text("\n".join(lines) + "\n")
    (out / "command.txt").write_text(
        f"rlpt data train-behavior {args.env} --algo {args.algo} --steps {args.steps} "
        f"--snapshot-every {args.snapshot_every} --seed {args.seed}\n")
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    import rlpt
    from rlpt.eval import evaluate

    path = Path(args.path)
    run_dir = path if (path / "config.yaml").exists() else None
    ckpt = path
    config = {}
    if run_dir is not None:
        from rlpt.runs import RunDir

        config = load_yaml(run_dir / "config.yaml") or {}
        ckpt = run_dir / "final" if (run_dir / "final").exists() else RunDir.open(run_dir).latest_checkpoint()
        if ckpt is None:
            raise RlptError(f"{run_dir} holds no checkpoint to evaluate")
    agent = rlpt.load(ckpt)
    env = args.env or config.get("env")
    if not env:
        raise RlptError("which env? pass --env SPEC (the run's config names none)")
    refs = tuple(config["ref_scores"]) if config.get("ref_scores") else None
    video = args.video or (str(run_dir / "videos" / "eval.mp4") if run_dir is not None else None)
    res = evaluate(agent, env, episodes=args.episodes, seed=args.seed, ref_scores=refs, video_path=video,
                   env_options={"render_mode": "rgb_array"} if video else None)
    _print_json({"checkpoint": str(ckpt), "env": env, **res.metrics(prefix=""), "video": res.video})
    return 0


# ----------------------------------------------------------------------------- ope
def cmd_ope_noise(args) -> int:
    import numpy as np

    import rlpt
    from rlpt.runs import RunDir
    from rlpt.train import Recipe, _load_dataset
    from rlpt.utils import write_json

    run = RunDir.open(args.run)
    ckpt = Path(args.checkpoint) if args.checkpoint else (
        run.path / "final" if (run.path / "final").exists() else run.latest_checkpoint())
    if ckpt is None:
        raise RlptError(f"{run.path} holds no checkpoint to score")
    agent = rlpt.load(ckpt)
    if not agent.reports_ope:
        raise RlptError(f"{ckpt}: agent '{agent.config.__class__.__name__}' has no offline policy evaluation")
    recipe = Recipe.from_dict(load_yaml(run.config_path)["recipe"], str(run.config_path))
    dataset = _load_dataset(recipe, data_dir(), quiet=True)
    noise = agent.ope_noise(dataset, repeats=args.repeats)
    scores = np.array([h[2] for h in agent.ope_history if np.isfinite(h[2])])
    spread = float(scores.std(ddof=1)) if len(scores) > 1 else None
    steps = sorted({h[0] for h in agent.ope_history})
    diffs = np.concatenate([np.diff([h[2] for h in sorted(agent.ope_history) if h[1] == m])
                            for m in {h[1] for h in agent.ope_history}] or [np.zeros(0)])
    report = {"checkpoint": str(ckpt), "repeats": args.repeats, "noise_sd": noise["sd"],
              "noise_sd_per_member": [float(np.std(s, ddof=1)) for s in noise["scores"]],
              "scores": noise["scores"], "iterate_scores_sd": spread, "iterates": len(scores),
              "scored_steps": len(steps),
              "consecutive_change_sd": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
              "signal_to_noise": spread / noise["sd"] if spread and noise["sd"] > 0 else None}
    write_json(run.path / "ope_noise.json", report)
    _print_json({k: v for k, v in report.items() if k != "scores"})
    return 0


# ----------------------------------------------------------------------------- deploy
def cmd_deploy(args) -> int:
    from rlpt.deploy import deploy

    s = deploy(args.policy, args.robot, episodes=args.episodes, out=args.out, max_steps=args.max_steps,
               realtime=not args.no_realtime, quiet=args.quiet or None, overrides=list(args.overrides))
    _print_json({k: v for k, v in s.items() if k != "episodes"})
    print(f"recorded {sum(e['length'] for e in s['episodes'])} steps in {len(s['episodes'])} episode(s) -> "
          f"{s['dataset']}")
    return 0


# ----------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from rlpt.export import export_policy

    model = export_policy(args.path, args.out, format=args.format)
    info = json.loads((model.parent / "policy.json").read_text())
    inp, out = info["input"], info["output"]
    shape = lambda s: "[" + ", ".join(map(str, s)) + "]"
    print(f"wrote {model} and {model.parent / 'policy.json'}: {info['agent']} policy, {inp['name']} "
          f"{shape(inp['shape'])} {inp['dtype']} -> {out['name']} {shape(out['shape'])} {out['dtype']}; "
          f"sha256 {info['sha256'][:16]}...")
    parity, n = info["parity"], len(info["test_vector"]["observations"])
    if parity.get("runtime"):
        print(f"parity: OK, {parity['runtime']} reproduces agent.predict(deterministic=True) on {n} test "
              f"observations (max |diff| {parity['max_abs_diff']:.2e})")
    else:
        print(f"parity: not run ({parity['checked']})")
    return 0


# ----------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from rlpt.train import check_resumable, find_recipe, load_recipe, train

    if args.resume:
        check_resumable(args.resume)  # the run's saved recipe wins over the file and overrides
    recipe = load_recipe(args.recipe, list(args.overrides))
    if not args.resume:
        recipe.check_agent_config(str(find_recipe(args.recipe)))  # errors name the file; nothing has run yet
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    summary = train(recipe, out_root=Path(args.out), data_root=data_dir(), resume=args.resume, quiet=args.quiet or None)
    brief = {k: summary.get(k) for k in ("run", "story", "offline_score", "online_score", "first_online_score",
                                          "seconds", "plot", "story_plot", "video")}
    if summary.get("ope"):
        brief["ope"] = {k: summary["ope"].get(k) for k in ("spearman", "noise_sd", "acceptances_not_worse")}
    print(json.dumps(brief, indent=2))
    return 0


# ----------------------------------------------------------------------------- tune
def cmd_tune(args) -> int:
    from rlpt.tune import format_table, tune_recipe

    res = tune_recipe(args.recipe, args.space, num_samples=args.num_samples, overrides=list(args.overrides),
                      scheduler=args.scheduler, metric=args.metric, mode=args.mode, out=args.out, name=args.name,
                      storage=args.storage, address=args.address, data_root=data_dir(), num_cpus=args.num_cpus,
                      cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                      max_concurrent=args.max_concurrent, max_failures=args.max_failures,
                      grace_period=args.grace_period, resume=args.resume, quiet=args.quiet)
    print(format_table(res["rows"], args.metric))
    print(f"results: {res['results_csv']}")
    if res["best_config"]:
        print(f"best config: {res['best_config']}  (reproduce: rlpt train {res['best_config']})")
    else:
        print("no trial reported the metric; no best_config.yaml written", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- reward
def cmd_reward_train_classifier(args) -> int:
    from rlpt.rewards.classifier import train_success_classifier

    t0 = time.time()
    clf = train_success_classifier(args.task, args.out, episodes=args.episodes, failures=args.failures,
                                   steps=args.steps, camera=args.camera, image_size=args.image_size, seed=args.seed,
                                   reverse=args.reverse, fp_target=args.fp_target, eval_episodes=args.eval_episodes,
                                   device=args.device, quiet=args.quiet or None)
    report = clf.report
    keys = ("fp_rate", "fn_rate", "accuracy", "balanced_accuracy", "precision", "auc", "positives", "negatives")
    brief = {"out": args.out, "task": clf.task, "camera": clf.camera, "image_size": clf.image_size,
             "threshold": round(clf.threshold, 4), "data": clf.config.get("data"),
             "heldout": {k: report["heldout"].get(k) for k in keys}}
    if "rollouts" in report:
        brief["rollouts"] = {"frame": {k: report["rollouts"]["frame"].get(k) for k in keys},
                             "episode": report["rollouts"]["episode"]}
    _print_json(brief)
    h = report["heldout"]
    print(f"wrote {args.out} in {time.time() - t0:.0f}s: held-out FP rate {h['fp_rate']:.3f}, FN rate "
          f"{h['fn_rate']:.3f}, accuracy {h['accuracy']:.3f} at threshold {clf.threshold:.3f}")
    return 0


# ----------------------------------------------------------------------------- robot
def cmd_robot_check(args) -> int:
    from rlpt.robots import load_robot_config, make_driver

    cfg = load_robot_config(args.config, list(args.overrides))
    summary = cfg.summary()
    driver = make_driver(cfg)  # builds without connecting: validates the driver's options (a misspelt one fails)
    if args.connect:
        t0 = time.monotonic()
        driver.connect()
        try:
            obs = driver.read()
            fields = {k: getattr(obs, k) for k in ("joint_pos", "joint_vel", "ee_pos", "ee_rot", "gripper")
                      if getattr(obs, k) is not None}
            summary["connect"] = {
                "seconds": round(time.monotonic() - t0, 3), "observation_age_s": round(obs.age(), 4),
                **{k: (v.round(4).tolist() if hasattr(v, "round") else round(float(v), 4)) for k, v in fields.items()},
                "images": {k: list(v.shape) for k, v in obs.images.items()},
                "extra": {k: list(v.shape) for k, v in obs.extra.items()},
            }
            missing = [e.key for e in cfg.policy.state if obs.get(e.key) is None or obs.get(e.key).size != e.dim]
            if missing:
                raise RlptError(f"{args.config}: policy.observation.state needs {missing}, which the "
                                f"{cfg.driver.name!r} driver's observation lacks (or has with another size)")
        finally:
            driver.disconnect()
    _print_json(summary)
    print(f"OK: {args.config} is a valid {cfg.type} config ({cfg.control_mode} at {cfg.control_rate_hz:g} Hz, "
          f"driver {cfg.driver.name})" + ("; connected, read one observation, disconnected" if args.connect else ""))
    return 0


# ----------------------------------------------------------------------------- pretrain
def cmd_pretrain_gfn(args) -> int:
    import torch

    from rlpt.gfn.envs import BitSeq, HyperGrid
    from rlpt.gfn.ocgfn import OCGFNConfig, pretrain

    torch.set_num_threads(args.threads)
    env = HyperGrid(args.dim, args.side) if args.env == "hypergrid" else BitSeq(args.length, args.word)
    config = OCGFNConfig(batch_size=args.batch_size, failure=args.failure, seed=args.seed)
    t0 = time.time()
    oc, history = pretrain(env, args.steps, config, eval_every=args.eval_every, quiet=args.quiet or None)
    oc.save(args.out, extra={"history": history, "seconds": round(time.time() - t0, 1)})
    print(f"wrote {args.out}: OC-GFN on {env.spec()}, {args.steps} steps in {time.time() - t0:.0f}s, exact success "
          f"rate {history[-1]['success_rate']:.4f}")
    return 0


# Config fields of the pretraining commands that also have a flag (`--batch-size 32` is `batch_size=32`).
CONTEXTWM_FLAGS = ("batch_size", "seq_len", "image_size", "lr")
VPTR_FLAGS = ("batch_size", "image_size", "clip_len", "stride", "lr", "tau", "discount", "layer_norm")
_OVERRIDE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*=")


def _split_videos(args) -> list[str]:
    """`--videos A B key=value`: argparse hands trailing overrides to --videos; take them back (a path that exists
    stays a video)."""
    keep, extra = [], []
    for v in args.videos:
        (extra if _OVERRIDE.match(v) and not Path(v).exists() else keep).append(v)
    if not keep:
        raise ConfigError("--videos needs at least one video source before the key=value overrides")
    args.videos = keep
    return extra


def _pretrain_config(args, out: Path, config_cls, read_meta, marker: str, overrides: list[str]):
    """The pretraining config: a resumed run's own saved config, else `--preset` with `key=value` overrides."""
    if args.resume and ((out / "checkpoints" / "latest").exists() or (out / marker).exists()):
        config = config_cls.from_dict(read_meta(out)["config"], source=f"{out} (resumed)")  # the run's own wins
        if overrides or args.preset != "cpu-small":
            print(f"resuming {out} with its saved config (preset {config.name!r}); --preset, --plain, size "
                  "options and key=value overrides are ignored")
        return config
    where = f"preset {args.preset!r} with overrides"
    data = apply_overrides(config_cls.preset(args.preset).to_dict(), overrides, where)
    return config_cls.from_dict(data, source=where)


def cmd_pretrain_contextwm(args) -> int:
    import torch

    from rlpt.pretrain.contextwm import WorldModelConfig, pretrain, read_meta

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = flag_overrides(args, CONTEXTWM_FLAGS) + list(args.overrides) + _split_videos(args)
    if args.plain:
        overrides.append("contextual=false")
    out = Path(args.out or f"runs/contextwm__{args.preset}{'-plain' if args.plain else ''}__seed{args.seed}")
    config = _pretrain_config(args, out, WorldModelConfig, read_meta, "contextwm.json", overrides)
    t0 = time.time()
    out = pretrain(args.videos if len(args.videos) > 1 else args.videos[0], config, steps=args.steps, out_dir=out,
                   seed=args.seed, resume=args.resume, device=args.device, stride=args.stride,
                   log_every=args.log_every, checkpoint_every=args.checkpoint_every, quiet=args.quiet or None)
    summary = json.loads((out / "summary.json").read_text())
    final = summary["final"]
    kind = "ContextWM" if config.contextual else "plain WM"
    print(f"wrote {out}: {kind} ({config.name}, {config.image_size}x{config.image_size}) {summary['steps']} steps in "
          f"{time.time() - t0:.0f}s ({summary['updates_per_s']:.2f} updates/s), image mse "
          f"{final.get('train/image_mse', float('nan')):.5f}, kl {final.get('train/kl', float('nan')):.2f}. "
          f"Fine-tune with `rlpt train agents/contextwm/<task>.yaml pretrained={out}`")
    return 0


def cmd_pretrain_vptr(args) -> int:
    import torch

    from rlpt.pretrain.vptr import ICVFConfig, pretrain, read_meta

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = flag_overrides(args, VPTR_FLAGS) + list(args.overrides) + _split_videos(args)
    out = Path(args.out)
    config = _pretrain_config(args, out, ICVFConfig, read_meta, "vptr.json", overrides)
    t0 = time.time()
    callbacks = []
    if args.max_seconds is not None:  # stop at a logging step once the time is used; the model is still written
        if args.max_seconds <= 0:
            raise ConfigError(f"--max-seconds must be > 0; got {args.max_seconds}")
        callbacks.append(lambda step, row: time.time() - t0 < args.max_seconds)
    out = pretrain(args.videos if len(args.videos) > 1 else args.videos[0], config, steps=args.steps,
                   out_dir=args.out, seed=args.seed, resume=args.resume, device=args.device,
                   log_every=args.log_every, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                   quiet=args.quiet or None, callbacks=callbacks)
    summary = json.loads((out / "summary.json").read_text())
    order = summary["final"].get("eval/value_order")
    print(f"wrote {out}: ICVF ({config.name}) {summary['steps']} steps in {time.time() - t0:.0f}s "
          f"({summary['updates_per_s']:.1f} updates/s), encoder out_dim {summary['encoder_out_dim']}"
          + (f", value order on its fixed evaluation clips {order:.2f}" if order is not None else "")
          + f". Use it: rlpt train agents/vptr/tabletop-push.yaml pretrained={out}")
    return 0


# ----------------------------------------------------------------------------- video
def cmd_video_render(args) -> int:
    from rlpt.collect.video_render import render_videos

    t0 = time.time()
    manifest = render_videos(args.out, domains=args.domains, clips=args.clips, frames=args.frames, size=args.size,
                             seed=args.seed, texture_seeds=args.texture_seeds, cameras=args.cameras,
                             force=args.force, quiet=args.quiet or None)
    mb = sum(f.stat().st_size for f in manifest.parent.rglob("*") if f.is_file()) / 2**20
    print(f"wrote {manifest}: {args.clips} clips x {args.frames} frames at {args.size}x{args.size} "
          f"({mb:.1f} MB) in {time.time() - t0:.0f}s")
    return 0


def cmd_video_info(args) -> int:
    from rlpt.data.video import open_videos

    clips = open_videos(args.path, clip_len=args.clip_len, stride=args.stride, probe="all")
    info = clips.describe()
    if args.write_manifest:
        info["manifest"] = str(clips.write_manifest(args.write_manifest))
    if args.json:
        _print_json(info)
        return 0
    print(f"{args.path}: {info['videos']} usable videos, {info['skipped']} skipped"
          + (f" ({', '.join(f'{n} {k}' for k, n in info['skipped_by_reason'].items())})" if info["skipped"] else ""))
    print(f"frames per video: min {info['frames_min']}, mean {info['frames_mean']}, max {info['frames_max']}; "
          f"total {info['frames_total']}; kinds: {info['kinds']}")
    if "domains" in info:
        print("domains: " + ", ".join(f"{k} {n}" for k, n in info["domains"].items()))
    for row in info.get("skipped_examples", []):
        print(f"  skipped {row['path']}: {row['reason']}")
    if "manifest" in info:
        print(f"wrote {info['manifest']}")
    return 0


# ----------------------------------------------------------------------------- quickstart
def cmd_quickstart(args) -> int:
    import torch

    from rlpt.quickstart import quickstart

    torch.set_num_threads(args.threads)
    summary = quickstart(out_root=Path(args.out), data_root=data_dir(), quiet=args.quiet or None, seed=args.seed)
    print(json.dumps(summary, indent=2))
    return 0


# ----------------------------------------------------------------------------- plot
def cmd_plot(args) -> int:
    from rlpt.eval.plots import plot_runs

    res = plot_runs(args.runs, out=args.out, metric=args.metric, band=args.band)
    for label, members in res["groups"].items():
        print(f"{label}: {len(members)} run(s)")
    print(f"wrote {res['out']}")
    return 0


def version() -> str:
    """rlpt's version: the installed package's metadata, else `rlpt.__version__` (a source checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("rlpt")
    except PackageNotFoundError:
        import rlpt

        return rlpt.__version__


# ----------------------------------------------------------------------------- parser
def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `rlpt` parser. The pretraining commands' config flags are generated from their config classes, whose
    modules import torch; they are built only when `argv` names `pretrain` (or is None: the full parser)."""
    config_classes = argv is None or "pretrain" in argv
    p = argparse.ArgumentParser(prog="rlpt", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--version", action="version", version=f"rlpt {version()}")
    nouns = p.add_subparsers(dest="noun", required=True)

    env = nouns.add_parser("env", help="list and check environments").add_subparsers(dest="verb", required=True)
    e = env.add_parser("list", help="list the env specs in the envs/ catalog")
    e.set_defaults(func=cmd_env_list)
    e = env.add_parser("check", help="run gymnasium's and SB3's env checkers and a random episode (seconds)",
                       description="Checks an env with gymnasium's and SB3's env checkers, rolls out a random "
                                   "episode and, with --pixels, writes its video (default runs/env_check/).")
    e.add_argument("spec", help="env spec, e.g. tabletop/push, mujoco/Hopper-v5, dmc/cheetah-run, hopper")
    e.add_argument("--pixels", action="store_true", help="check pixel observations")
    e.add_argument("--image-size", type=int, default=64)
    e.add_argument("--episodes", type=int, default=1)
    e.add_argument("--video", help="mp4 path for the first episode")
    e.set_defaults(func=cmd_env_check)

    data = nouns.add_parser("data", help="make, inspect and convert offline datasets").add_subparsers(
        dest="verb", required=True)
    d = data.add_parser("make", help="generate a dataset (minutes)",
                        description="Generates a D4RL-layout HDF5 dataset with rlpt's committed behaviour "
                                    "policies: <hopper|halfcheetah|walker2d>-<random|medium|expert|medium-replay|"
                                    "medium-expert>-v5, or tabletop-<task>-<scripted|noisy>. Writes "
                                    "$RLPT_DATA_DIR/<name>.hdf5 (default ./data).")
    d.add_argument("name")
    d.add_argument("--size", type=int, help="number of transitions (default: D4RL's size for the kind)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--images", action="store_true", help="tabletop: also store 64x64 camera frames")
    d.add_argument("--backend", choices=("gymnasium", "mjx"), default="gymnasium",
                   help="mjx: roll the locomotion behaviour policies out in N batched MJX worlds (GPU; needs "
                        "pip install -e '.[mjx]'); the first step compiles (minutes on a CPU)")
    d.add_argument("--num-envs", type=int, help="envs stepped together (default 8; mjx: 1024)")
    d.add_argument("--device", default="auto", help="mjx: torch device of the results (auto: where JAX runs)")
    d.add_argument("--out", help="output .hdf5 path")
    d.add_argument("--force", action="store_true", help="regenerate even if the file exists")
    d.set_defaults(func=cmd_data_make)
    d = data.add_parser("info", help="print size, return distribution and normalized score of a dataset file")
    d.add_argument("file")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_data_info)
    d = data.add_parser("convert", help="convert between D4RL HDF5 (.hdf5) and Minari (dataset id or folder)")
    d.add_argument("src")
    d.add_argument("dst")
    d.set_defaults(func=cmd_data_convert)
    d = data.add_parser("train-behavior", help="train SAC behaviour policies for dataset generation (tens of minutes)",
                        description="Trains SB3 SAC and saves actor snapshots plus a manifest (random/medium/"
                                    "expert returns) into rlpt/collect/behavior/<ENV>/ unless --out is given.")
    d.add_argument("env", help="Gymnasium env id, e.g. Hopper-v5")
    d.add_argument("--algo", choices=("sac", "ppo"), default="sac")
    d.add_argument("--steps", type=int, default=60_000)
    d.add_argument("--snapshot-every", type=int, default=5_000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--out")
    d.set_defaults(func=cmd_data_train_behavior)

    ev = nouns.add_parser("eval", help="evaluate a run or checkpoint (seconds to minutes)",
                          description="Evaluates the final (or latest) checkpoint of a run folder, or a checkpoint "
                                      "folder, for N episodes; prints returns, normalized score, success rate and "
                                      "writes a video of the first episode.")
    ev.add_argument("path", help="run folder or checkpoint folder")
    ev.add_argument("--env", help="env spec (default: the run's)")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--seed", type=int, default=10_000)
    ev.add_argument("--video")
    ev.set_defaults(func=cmd_eval)

    op = nouns.add_parser("ope", help="offline policy evaluation diagnostics").add_subparsers(dest="verb",
                                                                                         required=True)
    o = op.add_parser("noise", help="re-score a run's policies K times: the OPE's own noise beside the spread "
                                    "of its scores across iterates (seconds to minutes)",
                      description="Loads the run's final (or latest) checkpoint and its dataset, scores every "
                                  "ensemble member's current policy --repeats times from fresh start states and "
                                  "model noise, and prints the pooled noise SD next to the SD of all OPE scores "
                                  "the run recorded and of the change between consecutive scores of a member. "
                                  "Writes ope_noise.json into the run folder.")
    o.add_argument("run", help="run folder of an agent with OPE (Uni-O4)")
    o.add_argument("--repeats", type=int, default=8)
    o.add_argument("--checkpoint", help="a checkpoint folder of the run (default: final, else latest)")
    o.set_defaults(func=cmd_ope_noise)

    t = nouns.add_parser("train", help="run a recipe (agents/<agent>/<task>.yaml) into a run folder",
                         description="Runs a recipe's offline then online phases, evaluating and checkpointing "
                                     "every eval interval; writes runs/<recipe>__<env>__seed<k>__<time>/. Minutes "
                                     "for CPU presets, hours for paper-scale recipes.")
    t.add_argument("recipe", help="recipe file or catalog name, e.g. agents/unio4/hopper-medium-replay-cpu.yaml")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seed=1 config.lr=1e-4")
    t.add_argument("--resume", metavar="RUN", help="continue a killed run from its last checkpoint")
    t.add_argument("--out", default="runs")
    t.add_argument("--threads", type=int, help="torch threads (default: torch's own; 1 is much faster when other "
                                               "jobs share the cores and the nets are small, as in the CPU presets)")
    t.set_defaults(func=cmd_train)

    tu = nouns.add_parser("tune", help="Ray Tune sweep over a recipe (minutes to hours; embedded or --address)",
                          description="Samples --num-samples configurations from a search-space YAML ({key: {type: "
                                      "uniform|loguniform|choice|randint|grid, ...}}, dotted keys like "
                                      "config.actor_lr), runs `rlpt train` for each as a Ray Tune trial (reporting "
                                      "every evaluation; trials resume from their rlpt run folders), then writes "
                                      "<out>/<name>/results.csv and best_config.yaml (rlpt train best_config.yaml "
                                      "reproduces the best trial). Ray runs embedded unless --address names a "
                                      "cluster (docs/cluster.md). Needs pip install 'rlpt[cluster]'.")
    tu.add_argument("recipe", help="recipe file or catalog name, e.g. agents/iql/hopper-medium-replay-cpu.yaml")
    tu.add_argument("overrides", nargs="*", help="key=value overrides applied to every trial, e.g. online_steps=0")
    tu.add_argument("--space", required=True, help="search-space YAML, e.g. agents/iql/tune/hopper-medium-replay.yaml")
    tu.add_argument("--num-samples", type=int, default=4, help="configurations to sample (grid: repeats of the grid)")
    tu.add_argument("--scheduler", choices=("asha", "fifo"), default="fifo",
                    help="asha stops poor trials early at evaluations; fifo runs every trial to the end")
    tu.add_argument("--metric", default="eval/normalized_score",
                    help="an rlpt evaluation metric (eval/return when the task has no reference scores)")
    tu.add_argument("--mode", choices=("max", "min"), default="max")
    tu.add_argument("--address", help="join a running Ray cluster (host:port or 'auto') instead of embedded Ray")
    tu.add_argument("--out", default="runs/tune", help="results, best_config.yaml and rlpt run folders go to "
                                                       "<out>/<name>/ (a shared folder on multi-node clusters)")
    tu.add_argument("--name", help="sweep name (default <recipe>-<time>)")
    tu.add_argument("--storage", help="Tune's storage_path (default --out): shared folder or s3://bucket/path")
    tu.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    tu.add_argument("--num-cpus", type=int, help="embedded Ray: CPUs to use (default: all)")
    tu.add_argument("--cpus-per-trial", type=float, default=1)
    tu.add_argument("--gpus-per-trial", type=float, default=0)
    tu.add_argument("--max-concurrent", type=int, help="trials running at once (default: as resources allow)")
    tu.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial from its checkpoint")
    tu.add_argument("--grace-period", type=int, default=1, help="asha: evaluations before a trial can be stopped")
    tu.set_defaults(func=cmd_tune)

    x = nouns.add_parser("export", help="export a run's or checkpoint's deterministic policy to ONNX or TorchScript",
                         description="Writes policy.onnx or policy.pt (observations as the env gives them -> actions "
                                     "in the env's bounds, normalisation included) and policy.json (spaces, SHA-256, "
                                     "a test vector), and checks the file reproduces the agent's actions. Default "
                                     "folder: <run>/export/<checkpoint>-<format>/. Seconds.")
    x.add_argument("path", help="run folder (its final, else latest, checkpoint) or checkpoint folder")
    x.add_argument("--format", choices=("onnx", "torchscript"), required=True,
                   help="onnx (needs pip install 'rlpt[export]') or torchscript")
    x.add_argument("--out", help="output folder")
    x.set_defaults(func=cmd_export)

    dp = nouns.add_parser("deploy", help="run a policy on a robot config at its control rate, recording episodes",
                          description="Loads a run's (final, else latest) or a checkpoint's policy, builds the robot "
                                      "env from a robot_configs/*.yaml (every action passes the safety layer), runs "
                                      "episodes at the config's rate and records them to <out>/episodes.hdf5 (an "
                                      "rlpt Dataset, written as each episode ends).")
    dp.add_argument("--policy", required=True, help="run folder or checkpoint folder")
    dp.add_argument("--robot", required=True, help="robot config, e.g. robot_configs/sim_widowx_tabletop_push.yaml")
    dp.add_argument("overrides", nargs="*", help="robot config overrides as key=value, e.g. driver.port=5555 "
                                                 "safety.on_fault=raise")
    dp.add_argument("--episodes", type=int, default=1)
    dp.add_argument("--max-steps", type=int, help="cap each episode (default: the config's max_episode_steps)")
    dp.add_argument("--out", help="output folder (default runs/deploy/<config>__<time>)")
    dp.add_argument("--no-realtime", action="store_true", help="do not sleep to hold the control rate (sim only)")
    dp.set_defaults(func=cmd_deploy)

    rw = nouns.add_parser("reward", help="train reward models").add_subparsers(dest="verb", required=True)
    r = rw.add_parser("train-classifier", help="train RoboFuME's success classifier on tabletop frames (minutes)",
                      description="Records scripted demonstrations and failed episodes of a tabletop task with "
                                  "rendered frames, labels them by RoboFuME's recipe (last 3 frames of a success "
                                  "positive, the 10 before dropped, the rest negative), trains a small CNN, "
                                  "calibrates its threshold to a false-positive budget on held-out episodes, "
                                  "measures it on fresh rollouts and writes a folder for "
                                  "SuccessClassifierReward.load.")
    r.add_argument("--task", required=True, help="tabletop task, e.g. push (or tabletop/push)")
    r.add_argument("--out", required=True, help="output folder (model.safetensors, classifier.json)")
    r.add_argument("--episodes", type=int, default=40, help="successful demonstrations")
    r.add_argument("--failures", type=int, default=40, help="failed episodes")
    r.add_argument("--steps", type=int, default=1000, help="training steps")
    r.add_argument("--camera", default="front", help="front, side, top, wrist or workspace")
    r.add_argument("--image-size", type=int, default=64)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--reverse", action="store_true", help="also record the reverse task (backward data)")
    r.add_argument("--fp-target", type=float, default=0.05, help="held-out false-positive rate to stay under")
    r.add_argument("--eval-episodes", type=int, default=8, help="fresh rollouts to measure FP/FN on (0: none)")
    r.add_argument("--device", default="auto")
    r.set_defaults(func=cmd_reward_train_classifier)

    rb = nouns.add_parser("robot", help="check robot configs (robot_configs/*.yaml)").add_subparsers(
        dest="verb", required=True)
    r = rb.add_parser("check", help="validate a robot config; with --connect also read one observation",
                      description="Validates a robot config (schema, limits, policy mapping) and prints a summary. "
                                  "With --connect, connects through the config's driver, reads one observation, "
                                  "checks it carries what the policy mapping needs, and disconnects (no command "
                                  "is sent).")
    r.add_argument("config", help="robot config file, e.g. robot_configs/sim_widowx_tabletop_push.yaml")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. control_rate_hz=20 driver.port=5555")
    r.add_argument("--connect", action="store_true", help="connect, read one observation, disconnect")
    r.set_defaults(func=cmd_robot_check)

    pre = nouns.add_parser("pretrain", help="reward-free pretraining of reusable components").add_subparsers(
        dest="verb", required=True)
    g = pre.add_parser("gfn", help="OC-GFN: outcome-conditioned GFlowNet pretraining (minutes)",
                       description="Trains an outcome-conditioned GFlowNet (OC-GFN) reward-free on a GFlowNet DAG, "
                                   "with a GAFN/RND explorer supplying hindsight-relabelled outcomes, and writes a "
                                   "checkpoint folder. Adapt it with `rlpt train agents/gfn/<task>.yaml "
                                   "config.pretrained=CKPT`. See docs/gfn.md.")
    g.add_argument("--env", choices=("hypergrid", "bitseq"), default="hypergrid")
    g.add_argument("--dim", type=int, default=2, help="hypergrid dimension D")
    g.add_argument("--side", type=int, default=16, help="hypergrid side H")
    g.add_argument("--length", type=int, default=12, help="bitseq length n")
    g.add_argument("--word", type=int, default=4, help="bitseq bits per step k")
    g.add_argument("--steps", type=int, default=3000, help="training iterations")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--failure", default="trajectory", choices=("trajectory", "teleport", "terminal", "drop"),
                   help="how failed trajectories enter the loss (docs/gfn.md)")
    g.add_argument("--eval-every", type=int, default=500, help="iterations between exact success-rate checks")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=1, help="torch threads")
    g.add_argument("--out", required=True, help="checkpoint folder")
    g.set_defaults(func=cmd_pretrain_gfn)
    cw = pre.add_parser(
        "contextwm", help="ContextWM: action-free world-model pretraining on videos (minutes to hours)",
        description="Trains a contextualized world model (ResNet encoder, action-free DreamerV2 RSSM with discrete "
                    "latents, decoder cross-attending to a masked context frame of each clip; --plain: no context) "
                    "on clips of action-free video, and writes a run folder: config.yaml, metrics.csv/jsonl "
                    "(train/loss, train/image_mse, train/kl, perf/updates_per_s), tb/, checkpoints/ (resumable "
                    "with --resume) and, at the end, contextwm.json + model.safetensors + summary.json. Fine-tune "
                    "it with `rlpt train agents/contextwm/<task>.yaml pretrained=OUT`. The cpu-small preset "
                    "takes minutes on a laptop CPU (use --threads 1 when other jobs share the cores); the paper "
                    "preset needs a GPU.")
    cw.add_argument("--videos", nargs="+", required=True,
                    help="video folder(s), frame folders, SSv2/Ego4D-style list files or a `rlpt video render` "
                         "manifest.jsonl (e.g. video_data/sample)")
    cw.add_argument("--preset", default="cpu-small", choices=("paper", "cpu-small", "tiny"))
    cw.add_argument("--steps", type=int, default=2000, help="total updates (a resumed run continues to it)")
    cw.add_argument("--plain", action="store_true", help="plain world model: no context encoder or cross-attention")
    cw.add_argument("--out", help="output run folder (default runs/contextwm__<preset>[-plain]__seed<k>)")
    cw.add_argument("overrides", nargs="*", help="WorldModelConfig overrides as key=value, e.g. depth=32 "
                                                 "kl_scale=0.5 (applied to --preset)")
    if config_classes:
        from rlpt.nets.worldmodel import WorldModelConfig

        config_flags(cw, WorldModelConfig, CONTEXTWM_FLAGS, help_prefix="override the preset's")
    cw.add_argument("--stride", type=int, default=1, help="frame step inside a clip")
    cw.add_argument("--seed", type=int, default=0)
    cw.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    cw.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 on a shared CPU)")
    cw.add_argument("--log-every", type=int, default=50)
    cw.add_argument("--checkpoint-every", type=int, default=500, help="steps between resumable checkpoints "
                                                                       "(also one every 10 minutes)")
    cw.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    cw.set_defaults(func=cmd_pretrain_contextwm)
    vp = pre.add_parser(
        "vptr", help="V-PTR phase 1: ICVF value pretraining of an image encoder on action-free video (minutes)",
        description="Trains an intention-conditioned value function V(s, s+, z) (ICVF: ResNet encoder + multilinear "
                    "heads) by expectile TD learning on clips of action-free video (consecutive frames are "
                    "transitions; outcomes and intents are the current, a later or a random frame), and writes a "
                    "run folder: config.yaml, metrics.csv/jsonl (train/loss, eval/value_order), checkpoints/ "
                    "(resumable with --resume) and, at the end, vptr.json + model.safetensors + encoder.json. "
                    "Agents load the encoder with `rlpt train agents/vptr/tabletop-push.yaml pretrained=OUT`. "
                    "The cpu-small preset takes minutes on a laptop CPU; the paper preset needs a GPU for its 1M "
                    "steps.")
    vp.add_argument("--videos", nargs="+", required=True,
                    help="video folder(s), frame folders, list files or a `rlpt video render` manifest.jsonl")
    vp.add_argument("--steps", type=int, default=3000, help="total gradient steps (a resumed run continues to it)")
    vp.add_argument("--out", required=True, help="output run folder")
    vp.add_argument("--preset", default="cpu-small", choices=("paper", "cpu-small", "tiny"))
    vp.add_argument("overrides", nargs="*", help="ICVFConfig overrides as key=value, e.g. expectile=0.8 "
                                                 "encoder_kwargs.depth=8 (applied to --preset)")
    if config_classes:
        from rlpt.pretrain.vptr import ICVFConfig

        config_flags(vp, ICVFConfig, VPTR_FLAGS, help_prefix="override the preset's")
    vp.add_argument("--seed", type=int, default=0)
    vp.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    vp.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    vp.add_argument("--log-every", type=int, default=50)
    vp.add_argument("--eval-every", type=int, default=500, help="steps between value-order checks")
    vp.add_argument("--checkpoint-every", type=int, default=500)
    vp.add_argument("--max-seconds", type=float, help="stop after this much wall-clock time (at a logging step) and "
                    "write the model as at the end of --steps")
    vp.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    vp.set_defaults(func=cmd_pretrain_vptr)

    vid = nouns.add_parser("video", help="render and inspect video sets for video pretraining").add_subparsers(
        dest="verb", required=True)
    v = vid.add_parser(
        "render", help="render randomized-appearance simulator clips (mp4 + manifest; minutes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Renders in-the-wild-style clips for action-free video pretraining (ContextWM, V-PTR) from\n"
                    "dm_control domains (OU-noise or sinusoidal actions) and rlpt's tabletop (scripted, noisy or\n"
                    "random arm; tabletop-hand-push: a mocap hand instead of the arm), with randomized skybox and\n"
                    "floor textures (MuJoCo procedural builtins, random colours), floor reflectance, body colours,\n"
                    "lighting and camera jitter. Domains are used in turn; clip i's looks come from a texture seed\n"
                    "drawn from --texture-seeds, its behaviour from (--seed, i); the same arguments give the same\n"
                    "files.\n\n"
                    "Held-out appearance: render the pretraining set with one texture-seed range (default 0:1000)\n"
                    "and evaluate transfer on clips or env textures from a disjoint range (e.g. 1000:1100), so the\n"
                    "test looks were never seen in pretraining.\n\n"
                    "Writes OUT/manifest.jsonl (per clip: path, frames, fps, domain, task, texture_seed,\n"
                    "behaviour, camera, states), OUT/<domain>/<clip>.mp4, OUT/<domain>/<clip>.states.npy (true\n"
                    "qpos, qvel and mocap positions per frame, for linear probes) and OUT/render.json. Read it\n"
                    "with rlpt.data.video.open_videos(OUT). The defaults take minutes on a laptop CPU.")
    v.add_argument("--out", required=True, help="output folder (replaced only with --force)")
    v.add_argument("--domains", nargs="+", default=["cheetah", "walker", "hopper", "finger", "tabletop-push",
                                                     "tabletop-hand-push"],
                   help="dm_control domains (cheetah, walker, hopper, finger, reacher, cartpole, ... or domain-task), "
                        "tabletop-<task> (push, reach, pick-place, drawer-open, ...), tabletop-hand-push")
    v.add_argument("--clips", type=int, default=100, help="number of clips (domains in turn)")
    v.add_argument("--frames", type=int, default=50, help="frames per clip")
    v.add_argument("--size", type=int, default=64, help="frame side in pixels")
    v.add_argument("--seed", type=int, default=0, help="behaviour and initial-state seed")
    v.add_argument("--texture-seeds", default="0:1000", metavar="A:B",
                   help="range of appearance seeds, B exclusive (default 0:1000); use a disjoint range for "
                        "held-out looks")
    v.add_argument("--cameras", nargs="+", default=None, metavar="CAMERA",
                   help="tabletop domains: the static cameras a clip is filmed from, one drawn uniformly per clip "
                        "from its looks (front, side, top, workspace; workspace is closer, the task fills the "
                        "frame). Default: front, side or top with probabilities 0.6, 0.25, 0.15")
    v.add_argument("--force", action="store_true", help="replace OUT if it exists")
    v.set_defaults(func=cmd_video_render)
    v = vid.add_parser("info", help="count the usable and skipped videos of a video source (seconds)",
                       description="Opens a folder of videos or frame folders, an SSv2/Ego4D-style list file or a "
                                   "manifest.jsonl as rlpt.data.video.open_videos does, reads every frame count, "
                                   "and prints the usable videos, frames per video, domains and the skipped videos "
                                   "with reasons, in seconds for most folders. With --write-manifest also writes a "
                                   "manifest.jsonl of the usable videos so later opens need no probing.")
    v.add_argument("path", help="folder, list file, manifest.jsonl or video file")
    v.add_argument("--clip-len", type=int, default=25, help="clip length the videos must cover")
    v.add_argument("--stride", type=int, default=1)
    v.add_argument("--json", action="store_true", help="print JSON")
    v.add_argument("--write-manifest", metavar="FILE", help="write a manifest.jsonl of the usable videos")
    v.set_defaults(func=cmd_video_info)

    pl = nouns.add_parser(
        "plot", help="overlay the learning curves of several runs, seeds as mean ± band (seconds)",
        description="Reads each run folder's metrics.jsonl (or metrics.csv), groups runs whose config.yaml holds "
                    "the same recipe apart from the seed, and draws one curve per group: the mean over seeds with "
                    "a band (± std, or a bootstrap 95% interval of the mean with --band ci). A folder holding run "
                    "folders (a sweep's output) stands for all of them. Writes one PNG (--out). Fails with the "
                    "list of metrics the runs have when one lacks --metric.")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or folders holding run folders")
    pl.add_argument("--metric", default="eval/normalized_score",
                    help="metric to draw (eval/return for tasks without reference scores)")
    pl.add_argument("--out", default="learning_curves.png", help="PNG path")
    pl.add_argument("--band", choices=("std", "ci"), default="std",
                    help="std: mean ± std over seeds; ci: 95%% percentile-bootstrap interval of the mean")
    pl.set_defaults(func=cmd_plot)

    q = nouns.add_parser("quickstart", help="the whole pipeline on embedded defaults (minutes)",
                         description="Makes (or reuses) a hopper dataset, then runs Uni-O4 offline and online end to "
                                     "end and writes a report under --out: summary.json with a one-line story (data "
                                     "average, best BC member, offline, online), plots/offline_to_online.png, a "
                                     "learning curve and an mp4. Takes minutes on a laptop CPU.")
    q.add_argument("--out", default="runs")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: these small nets gain little from more, and lose a lot when "
                        "other jobs share the cores)")
    q.set_defaults(func=cmd_quickstart)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    if args.quiet:
        os.environ["RLPT_QUIET"] = "1"
    try:
        return int(args.func(args) or 0)
    except RlptError as e:
        if args.debug:
            raise
        print(f"rlpt: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be read or written: bad input, not a bug
        if args.debug:
            raise
        print(f"rlpt: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlpt: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line without --debug, the traceback with it
        if args.debug:
            raise
        print(f"rlpt: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
