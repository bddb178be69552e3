"""benchmarks/harness.py (shared by the benchmark scripts), agent_speed's FLOP counting, the OPE ablation's summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402


def test_result_path_bare_name_goes_to_results_and_paths_stay(tmp_path):
    assert harness.result_path("x") == harness.RESULTS_DIR / "x.json"
    assert harness.result_path(tmp_path / "y.json") == tmp_path / "y.json"
    assert harness.result_path("sub/z") == Path("sub/z")


def test_write_result_is_atomic_and_round_trips(tmp_path):
    out = tmp_path / "deep" / "r.json"
    report = {"benchmark": "t", "rows": [{"a": 1.5}], "path": Path("p")}
    assert harness.write_result(out, report) == out
    assert json.loads(out.read_text()) == {"benchmark": "t", "rows": [{"a": 1.5}], "path": "p"}
    harness.write_result(out, {"benchmark": "t2"})  # replaces, leaves no temp file behind
    assert json.loads(out.read_text()) == {"benchmark": "t2"}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]


def test_write_result_jsonl_appends_lines(tmp_path):
    out = tmp_path / "r.jsonl"
    harness.write_result(out, {"i": 0}, jsonl=True)
    harness.write_result(out, {"i": 1}, jsonl=True)
    assert [json.loads(line)["i"] for line in out.read_text().splitlines()] == [0, 1]


def test_read_parts_checks_agreement_and_names_file_and_key(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"benchmark": "x", "settings": {"n": 1}, "command": "c1"}))
    b.write_text(json.dumps({"benchmark": "x", "settings": {"n": 2}, "command": "c2"}))
    parts = harness.read_parts([a, b], agree=("benchmark",))
    assert [p["command"] for p in parts] == ["c1", "c2"]
    assert harness.part_summary([a, b], parts, keys=("command",)) == [{"file": str(a), "command": "c1"},
                                                                       {"file": str(b), "command": "c2"}]
    with pytest.raises(ValueError, match=r"b\.json key 'settings': expected \{'n': 1\}.*given \{'n': 2\}"):
        harness.read_parts([a, b], agree=("settings",))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read .*bad.json"):
        harness.read_parts([a, tmp_path / "bad.json"])
    with pytest.raises(ValueError, match="at least one"):
        harness.read_parts([])


def test_machine_and_versions_blocks():
    m = harness.machine(extra_key=3, cpu_count=-1)  # a script's own keys are added and win
    assert m["extra_key"] == 3 and m["cpu_count"] == -1
    assert isinstance(m["cpu_model"], str) and m["cpu_model"]
    assert m["torch_threads"] == torch.get_num_threads()
    v = harness.versions(tool="1.0")
    assert v["torch"] == torch.__version__ and v["tool"] == "1.0"
    assert v["git_commit"] is None or len(v["git_commit"]) == 40
    assert harness.command_line("py").startswith("py ")


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert harness.set_threads(1) == 1
        with pytest.raises(ValueError, match="threads"):
            harness.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_matmul_recorder_counts_forward_and_backward_flops():
    agent_speed = pytest.importorskip("agent_speed")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(5, 4)  # no grad: the first layer's input gradient is never computed
    rec = agent_speed.MatmulRecorder()
    with rec:
        net(x).sum().backward()
    flops = sum(call[3] for call in rec.calls)
    # layer 1: forward + weight grad, 2 * 5*4*8 each; layer 2: forward, weight grad and input grad, 2 * 5*8*2 each
    assert flops == 2 * (2 * 5 * 4 * 8) + 3 * (2 * 5 * 8 * 2)
    assert len(rec.calls) == 5
    batched = agent_speed.BatchedMLP(3, 4, 2, (8,))
    rec = agent_speed.MatmulRecorder()
    with rec:
        batched(x).sum().backward()
    assert sum(call[3] for call in rec.calls) == 3 * flops  # three members, one bmm per layer and pass


def test_resummarize_replaces_only_the_summary(tmp_path):
    path = tmp_path / "r.json"
    harness.write_result(path, {"command": "x", "runs": {"0": 1.0, "1": 3.0}, "summary": {"mean": 0.0}})
    before = json.loads(path.read_text())
    harness.resummarize([path], lambda r: {"summary": {"mean": sum(r["runs"].values()) / len(r["runs"])}})
    after = json.loads(path.read_text())
    assert after["summary"] == {"mean": 2.0}
    assert {k: v for k, v in after.items() if k != "summary"} == {k: v for k, v in before.items() if k != "summary"}
    with pytest.raises(ValueError, match="missing.json"):
        harness.resummarize([tmp_path / "missing.json"], lambda r: {})


def test_ope_ablation_summary_groups_variants_and_pairs_seeds_with_the_baseline():
    import unio4_ope_ablation as abl

    rows = [{"seed": s, "critic_lr": 1e-4, "variant": v, "offline": off, "spearman": 0.5}
            for v, offs in (({"a": 1}, (50.0, 40.0, 45.0)), ({}, (48.0, 37.0, 44.0))) for s, off in enumerate(offs)]
    rows.append({"seed": 0, "critic_lr": 3e-4, "variant": {"a": 1}, "offline": 60.0, "spearman": 0.1})
    summary = abl.summarize(rows)
    assert [(e["critic_lr"], e["variant"], e["seeds"]) for e in summary] == [
        (1e-4, {"a": 1}, [0, 1, 2]), (1e-4, {}, [0, 1, 2]), (3e-4, {"a": 1}, [0])]
    first = summary[0]
    assert first["offline"]["mean"] == 45.0 and first["offline"]["mean_ci"] is not None
    d = first["offline_minus_baseline"]  # per-seed differences 2, 3, 1
    assert d["paired"] and d["diff"] == 2.0 and 1.0 <= d["low"] < d["high"] <= 3.0
    assert summary[1]["offline_minus_baseline"] is None and summary[2]["offline_minus_baseline"] is None


def _kagi_run(offline: float, curve: list[float], step: int = 500) -> dict:
    pts = [(0, offline)] + [(step * (i + 1), v) for i, v in enumerate(curve)]
    reach = next((s for s, v in pts if v >= 0.5), None)
    return {"offline_success": offline, "final_success": pts[-1][1], "curve": pts, "online_steps": step * len(curve),
            "steps_to_50": reach, "max_dip_first_2k": 0.0}


def test_kagi_summary_pairs_seeds_and_counts_a_run_that_never_got_there_as_its_budget():
    import vlm_rewards

    fast, slow, never = [0.2, 0.6, 0.8, 0.9], [0.0, 0.2, 0.4, 0.6], [0.0, 0.1, 0.2, 0.3]
    results = {str(s): {"sparse": _kagi_run(0.0, never if s == 0 else slow), "dense": _kagi_run(0.0, fast),
                        "noise_0.05": _kagi_run(0.0, fast[:-1] + [0.7])} for s in range(5)}
    t = vlm_rewards.summarize("kagi", results)["targets"]
    assert t["steps_to_50_seeds_used"] == 5
    assert t["sparse_steps_to_50"] == pytest.approx((2000 + 4 * 2000) / 5)  # seed 0 never: its 2,000-step budget
    assert t["dense_steps_to_50"] == 1000 and t["dense_half_the_steps"] is True
    assert t["sparse_never_reached_50_in_some_seeds"] is True
    assert t["dense_over_sparse_interval"]["ratio"] == pytest.approx(0.5)
    assert t["noise_loss_points"] == pytest.approx(20.0) and t["noise_loses_le_10"] is False
    assert t["noise_loss_interval"]["low"] == pytest.approx(20.0)  # the same loss on every seed
    assert t["dense_minus_sparse_online_mean_points"]["diff"] > 0
    rows = vlm_rewards.summarize("kagi", results)["conditions"]
    assert set(rows) == {"sparse", "dense", "noise_0.05"}  # conditions without runs are left out
    assert rows["dense"]["final_success"]["mean_ci"] is not None


def test_every_reward_condition_scores_failure_online_as_its_offline_labels_do(tmp_path):
    """A condition whose online rewards sit on another scale than the offline labels (e.g. 0/1 against -1/0)
    compares reward sources through a shift, not through their information."""
    pytest.importorskip("mujoco")
    import numpy as np
    import vlm_rewards

    from rlpt.collect.generate import make_dataset
    from rlpt.envs import make_env
    from rlpt.rewards.factory import offline_rewards, wrap_with_reward
    from rlpt.train import load_recipe

    data = make_dataset("tabletop-push-noisy", size=120, seed=0, quiet=True)
    checked = []
    for experiment, conditions in vlm_rewards.CONDITIONS.items():
        for cond, (recipe_name, overrides) in conditions.items():
            recipe = load_recipe(recipe_name, overrides)
            if recipe.reward["model"].get("type") == "classifier" or cond == "sparse_offset_mismatch":
                continue  # the classifier trains first (tested in test_rewards); the mismatch is kept on purpose
            env, model = wrap_with_reward(make_env("tabletop/push", seed=0), recipe.reward)
            env.reset(seed=0)
            online = env.step(np.zeros(env.action_space.shape, np.float32))[1]  # no success after one step
            labels = offline_rewards(data, recipe.reward, model)
            failure = labels.rewards[~np.asarray(labels.infos["success"], bool)]
            assert online == pytest.approx(float(failure.min()), abs=1e-6), (experiment, cond)
            checked.append(cond)
    assert {"sparse", "dense", "ground_truth"} <= set(checked)


def test_device_scripts_parse_and_say_how_to_call_them():
    """Each GPU script parses (bash -n) and its header names the device call (a session lent a GPU runs them as
    they are, with no time to debug)."""
    import subprocess

    scripts = sorted((BENCH / "device").glob("*.sh"))
    assert len(scripts) >= 3
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0, script.name
        text = script.read_text()
        if script.name != "common.sh":
            assert "carry" in text and f"benchmarks/device/{script.name}" in text, script.name
