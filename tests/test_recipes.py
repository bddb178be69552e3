"""Every shipped recipe (`agents/**/*.yaml`) loads, builds its agent on its env, and says where it comes from.

Also checks the cross-recipe promises the headers make: Uni-O4 termination functions match the env, the
CPU baselines get the same offline update budget as the Uni-O4 CPU preset of the same task, and presets of
one task share one dataset file. Building a paper-size Uni-O4 on CPU only allocates (well under a second).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest

import rlpt.agents  # noqa: F401  (registers agents)
from rlpt.agents.base import agent_class
from rlpt.collect.generate import LOCOMOTION_ENVS, parse_name
from rlpt.envs import make_env
from rlpt.errors import ConfigError
from rlpt.train import VECTOR_OPTIONS, load_recipe

AGENTS_DIR = Path(__file__).resolve().parents[1] / "agents"
RECIPES = sorted(p for p in AGENTS_DIR.glob("**/*.yaml") if p.parent.name != "tune")  # tune/: search spaces
IDS = [str(p.relative_to(AGENTS_DIR)) for p in RECIPES]


def config_of(recipe):
    """The agent config a recipe describes, built exactly as `rlpt train` builds it."""
    cls = agent_class(recipe.agent).config_class
    return cls.from_dict({"seed": recipe.seed, **recipe.config}, source=recipe.name)


def create(recipe, config):
    """Agents are built for one env of the recipe (vector-env options only choose how training steps it)."""
    env = make_env(recipe.env, **{k: v for k, v in recipe.env_options.items() if k not in VECTOR_OPTIONS})
    try:
        return config.create(env.observation_space, env.action_space, device="cpu")
    finally:
        env.close()


METHOD_AGENTS = {"robofume": "calql", "kagi": "calql", "vptr": "calql"}


def test_recipes_exist():
    names = set(IDS)
    for env in ("hopper", "halfcheetah", "walker2d"):
        for kind in ("medium", "medium-replay", "medium-expert"):
            assert f"unio4/{env}-{kind}.yaml" in names
    for name in ("unio4/hopper-medium-replay-cpu.yaml", "unio4/halfcheetah-medium-cpu.yaml", "unio4/quickstart.yaml",
                 "iql/hopper-medium-replay.yaml", "calql/hopper-medium-replay.yaml", "sb3_ppo/hopper-cpu.yaml",
                 "sb3_ppo/halfcheetah-cpu.yaml", "robofume/tabletop-push.yaml", "kagi/tabletop-push.yaml"):
        assert name in names


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_recipe_loads_and_builds(path: Path):
    text = path.read_text()
    assert text.startswith("#"), f"{path}: a recipe starts with a comment header (what, source, time)"
    recipe = load_recipe(str(path))
    # agents/<agent>/..., or a method folder whose recipes run one agent (RoboFuME and KAGI fine-tune Cal-QL)
    folder = path.parent.name
    assert recipe.agent in (METHOD_AGENTS.get(folder, folder),) or recipe.agent.startswith(f"{folder}_")
    assert recipe.source, f"{path}: recipe must name its source"
    assert (recipe.source == "CPU preset") == (path.stem.endswith("-cpu") or path.stem == "quickstart")
    datasets = [recipe.dataset] if isinstance(recipe.dataset, str) else list(recipe.dataset or [])
    for name in map(parse_name, datasets):
        if name.family == "locomotion":
            assert recipe.env == f"mujoco/{LOCOMOTION_ENVS[name.env]}", "dataset and env disagree"
        else:
            assert recipe.env.startswith(f"tabletop/{name.env.removesuffix('-reset')}"), "dataset and env disagree"
    if recipe.offline_steps:
        assert recipe.dataset is not None
    if recipe.config.get("mode") in ("exact", "amortized") and recipe.config.get("pretrained") is None:
        with pytest.raises(ConfigError, match="pretrained"):  # needs `rlpt pretrain gfn` output: a clear error
            config_of(recipe)
        return
    config = config_of(recipe)

    # YAML 1.1 reads `2e-5` as a string: every config value must have its field's type.
    hints = typing.get_type_hints(type(config))
    for key in recipe.config:
        value, hint = getattr(config, key), hints[key]
        if hint is float:
            assert isinstance(value, int | float) and not isinstance(value, bool), f"{path}: {key}={value!r}"
        elif hint is int or hint is bool:
            assert type(value) is hint, f"{path}: {key}={value!r} is not {hint.__name__}"
        elif typing.get_origin(hint) is tuple:
            assert isinstance(value, tuple) and all(isinstance(v, int) for v in value), f"{path}: {key}={value!r}"
    agent = create(recipe, config)

    if recipe.agent == "unio4":
        assert recipe.offline_steps == "auto"
        if name is not None and name.family == "locomotion":
            assert config.termination_fn == name.env
        assert agent.offline_total_steps == sum(config.phase_lengths()) > 0
    else:
        assert isinstance(recipe.offline_steps, int)


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_overrides_apply(path: Path):
    base = load_recipe(str(path))
    needs_ckpt = base.config.get("mode") in ("exact", "amortized")
    has_batch = "batch_size" in {f.name for f in dataclasses.fields(agent_class(base.agent).config_class)}
    recipe = load_recipe(str(path), ["seed=3"] + ["config.batch_size=64"] * has_batch
                         + ["config.pretrained=ckpt"] * needs_ckpt)
    config = config_of(recipe)
    assert recipe.seed == 3 and config.seed == 3
    assert not has_batch or (recipe.config["batch_size"] == 64 and config.batch_size == 64)
    bad = load_recipe(str(path), ["config.not_a_field=1"])
    with pytest.raises(ConfigError, match="not_a_field"):
        config_of(bad)


@pytest.mark.parametrize("task", ["hopper-medium-replay", "halfcheetah-medium"])
def test_cpu_benchmark_budgets_match(task: str):
    """IQL, Cal-QL and BC get the Uni-O4 CPU preset's critic + bc + improve steps; all share one dataset."""
    unio4 = load_recipe(str(AGENTS_DIR / "unio4" / f"{task}-cpu.yaml"))
    u = agent_class("unio4").config_class.from_dict(unio4.config)
    budget = u.critic_steps + u.bc_steps + u.improve_steps
    for agent in ("iql", "calql", "bc"):
        r = load_recipe(str(AGENTS_DIR / agent / f"{task}-cpu.yaml"))
        assert r.offline_steps == budget, f"{agent}: offline_steps {r.offline_steps} != Uni-O4's {budget}"
        assert (r.dataset, r.dataset_size) == (unio4.dataset, unio4.dataset_size)
    assert unio4.config["report_true_returns"] is True and not unio4.config.get("select_by_env_return", False)


def test_unio4_paper_flags_per_task():
    """The per-task flags of the original scripts (research note §1.10)."""
    def cfg(name):
        r = load_recipe(str(AGENTS_DIR / "unio4" / f"{name}.yaml"))
        return agent_class("unio4").config_class.from_dict(r.config), r

    for env in ("hopper", "halfcheetah", "walker2d"):
        for kind in ("medium", "medium-replay", "medium-expert"):
            c, r = cfg(f"{env}-{kind}")
            tanh = env == "halfcheetah" and kind in ("medium", "medium-replay")
            assert c.policy_activation == ("tanh" if tanh else "relu")
            assert c.state_norm == (not (env == "halfcheetah" and kind == "medium-replay"))
            assert c.critic_steps == (500_000 if (env, kind) == ("walker2d", "medium-replay") else 2_000_000)
            assert (c.bc_steps, c.improve_steps, c.batch_size, c.ope_horizon) == (400_000, 10_000, 512, 1000)
            assert c.q_hidden == (1024, 1024) and c.v_hidden == (512, 512, 512)
            assert math.isclose(c.online_clip, 0.05) and r.online_steps == 1_000_000
            if env == "hopper":
                assert math.isclose(c.online_reward_scale, 0.1)
