"""The import contract: rlpt's layers point only down, and the packages of one layer never import each other.

Every `import rlpt...` in the source counts, at module level or inside a function, so a lazy import cannot hide
a cycle. docs/architecture.md shows the same table; change both together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rlpt"

#: Lowest first. A module may import its own package, anything in a lower layer, and nothing else; in the two
#: layers of small modules (core, top) modules may also import each other, as long as no cycle forms.
OPEN_LAYERS = {"core", "top"}
LAYERS: list[tuple[str, list[str]]] = [
    ("core", ["rlpt._version", "rlpt.errors", "rlpt.utils", "rlpt.config", "rlpt.callbacks", "rlpt.runs",
              "rlpt.media", "rlpt.cluster"]),
    ("data, nets, envs", ["rlpt.data", "rlpt.nets", "rlpt.envs"]),
    ("collection", ["rlpt.collect"]),
    ("agent contract", ["rlpt.agents.base"]),
    ("rewards, pretraining", ["rlpt.rewards", "rlpt.pretrain"]),
    ("agents, GFlowNets", ["rlpt.agents", "rlpt.gfn"]),
    ("eval, robots", ["rlpt.eval", "rlpt.robots"]),
    ("top", ["rlpt", "rlpt.train", "rlpt.tune", "rlpt.export", "rlpt.deploy", "rlpt.cli", "rlpt.quickstart"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The most specific entry of LAYERS that `module` belongs to."""
    best = ""
    for _, units in LAYERS:
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
                best = unit
    if not best:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md)")
    return best


LEVEL = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def rlpt_imports(path: Path) -> list[tuple[str, int]]:
    """(imported rlpt module, line) for every import statement in the file, wherever it sits."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name == "rlpt" or a.name.startswith("rlpt.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                (node.module == "rlpt" or node.module.startswith("rlpt.")):
            if node.module == "rlpt":  # `from rlpt import x`: x may be a subpackage
                out += [(f"rlpt.{a.name}" if (ROOT / a.name).exists() or (ROOT / f"{a.name}.py").exists()
                         else "rlpt", node.lineno) for a in node.names]
            else:
                out.append((node.module, node.lineno))
    return out


def violations() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        src = module_name(path)
        src_unit = unit_of(src)
        for target, line in rlpt_imports(path):
            dst_unit = unit_of(target)
            if dst_unit == src_unit or LEVEL[dst_unit] < LEVEL[src_unit]:
                continue
            if LEVEL[dst_unit] == LEVEL[src_unit] and LAYERS[LEVEL[src_unit]][0] in OPEN_LAYERS:
                continue
            found.append(f"{path.relative_to(ROOT.parent)}:{line}: {src} ({LAYERS[LEVEL[src_unit]][0]}) imports "
                         f"{target} ({LAYERS[LEVEL[dst_unit]][0]})")
    return found


def test_every_import_points_down_the_layers():
    bad = violations()
    assert not bad, "layer violations:\n" + "\n".join(bad)


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        src = unit_of(module_name(path))
        for target, _ in rlpt_imports(path):
            dst = unit_of(target)
            if dst != src:
                graph.setdefault(src, set()).add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_between_packages():
    assert find_cycle(unit_graph()) is None, " -> ".join(find_cycle(unit_graph()))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    pkg = tmp_path / "rlpt"
    (pkg / "envs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "envs" / "__init__.py").write_text("")
    (pkg / "envs" / "bad.py").write_text("def f():\n    from rlpt.agents.iql import IQL\n    return IQL\n")
    (pkg / "envs" / "fine.py").write_text("from rlpt.errors import ConfigError\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    bad = violations()
    assert len(bad) == 1 and "rlpt/envs/bad.py:2" in bad[0] and "rlpt.agents.iql" in bad[0]


@pytest.mark.parametrize("module", ["rlpt.agents.iql", "rlpt.envs.make", "rlpt.collect.generate", "rlpt.cli"])
def test_every_module_has_a_layer(module):
    assert unit_of(module) in LEVEL
