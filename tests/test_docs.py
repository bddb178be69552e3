"""The README and docs stay true: every code block runs or parses, the benchmarks page matches the results files,
and the docs site builds with warnings as errors.

Code blocks (fenced, in README.md and docs/**/*.md), by language:
- `python`: the blocks of one page run in order in one namespace, in a scratch folder that holds a small
  regeneration of data/hopper-medium-replay-v5.hdf5 and links to the repository's agents/, envs/, robot_configs/
  and video_data/.
- `bash`/`sh`/`shell`/`console`: each command line (continuations joined, comments dropped) must be an `rlpt`
  command (optionally after VAR=value prefixes). By default it is parsed by the real CLI parser without running
  (long runs are shown in the docs; their recipes are loaded with their overrides, and the repository paths they
  name must exist). A block preceded by `<!-- docs-test: run -->` runs each command in the scratch folder and
  needs exit status 0, so it must use tiny budgets.
- `yaml` and `json`: parsed.
- `text` and unlabelled blocks are output or formulas, not code.
A block preceded by `<!-- no-run: REASON -->` is not executed (the set-up commands, cluster administration);
the reason is required and such blocks stay rare.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MARKER = re.compile(r"^\s*<!--\s*(no-run|docs-test)\s*:\s*(.*?)\s*-->\s*$")
SHELL = {"bash", "sh", "shell", "console"}
KNOWN = SHELL | {"python", "yaml", "yml", "json", "text", ""}
REPO_DIRS = ("agents/", "envs/", "robot_configs/", "video_data/", "benchmarks/")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: tuple[str, str] | None  # ("no-run", reason) or ("docs-test", "run" | "parse")

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """Fenced code blocks of a Markdown page, with the marker comment right above each (if any)."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)```([\w+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2).lower(), i
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        assert j < len(lines), f"{page.relative_to(ROOT)}:{start + 1}: unclosed code fence"
        body = "\n".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[start + 1:j])
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mk = MARKER.match(lines[k]) if k >= 0 else None
        blocks.append(Block(page, start + 1, lang, body + "\n", (mk.group(1), mk.group(2)) if mk else None))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for p in PAGES for b in code_blocks(p)]
PY_PAGES = sorted({b.page for b in ALL_BLOCKS if b.lang == "python" and not (b.marker and b.marker[0] == "no-run")})
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL and not (b.marker and b.marker[0] == "no-run")]


def shell_commands(code: str) -> list[list[str]]:
    """Command lines of a shell block as argv lists (continuations joined, comments and VAR=value prefixes dropped;
    a placeholder such as `<a Uni-O4 run>` stays one argument)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        line = re.sub(r"<([^<>\n]*)>", lambda m: "<" + m.group(1).replace(" ", "_") + ">", line)  # placeholders
        argv = shlex.split(line, comments=True)
        while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
            argv = argv[1:]
        if argv:
            out.append(argv)
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch folder like a user's checkout after `rlpt data make hopper-medium-replay-v5`, with less data."""
    from rlpt.collect.generate import make_dataset
    from rlpt.data import save_d4rl

    d = tmp_path_factory.mktemp("docs")
    (d / "data").mkdir()
    save_d4rl(make_dataset("hopper-medium-replay-v5", size=4000, seed=0, quiet=True),
              d / "data" / "hopper-medium-replay-v5.hdf5")
    for name in ("agents", "envs", "robot_configs", "video_data"):
        (d / name).symlink_to(ROOT / name)
    return d


# ----------------------------------------------------------------------------- the blocks themselves

def test_blocks_found_and_markers_valid():
    assert any(b.page.name == "README.md" for b in ALL_BLOCKS)
    assert any("docs" in b.page.parts for b in ALL_BLOCKS)
    no_run = [b for b in ALL_BLOCKS if b.marker and b.marker[0] == "no-run"]
    for b in ALL_BLOCKS:
        assert b.lang in KNOWN, f"{b.where}: code block language {b.lang!r} has no check here; use one of {KNOWN}"
        if b.marker and b.marker[0] == "no-run":
            assert b.marker[1], f"{b.where}: a no-run marker needs its reason: <!-- no-run: why -->"
        if b.marker and b.marker[0] == "docs-test":
            assert b.marker[1] in ("run", "parse"), f"{b.where}: docs-test must be 'run' or 'parse'"
            assert b.lang in SHELL, f"{b.where}: docs-test markers apply to shell blocks"
    code = [b for b in ALL_BLOCKS if b.lang not in ("", "text")]
    assert len(no_run) <= len(code) // 4, "no-run blocks must stay rare: " + ", ".join(b.where for b in no_run)


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang in ("yaml", "yml", "json")], ids=lambda b: b.where)
def test_data_block_parses(block):
    if block.lang == "json":
        json.loads(block.code)
    else:
        yaml.safe_load(block.code)


def check_shell_block(block: Block) -> None:
    """Run or parse every command of a shell block (see the module docstring); AssertionError or RlptError if not."""
    from rlpt.cli import build_parser, main
    from rlpt.train import load_recipe

    mode = block.marker[1] if block.marker else "parse"
    commands = shell_commands(block.code)
    assert commands, f"{block.where}: empty shell block"
    for argv in commands:
        shown = " ".join(argv)
        assert argv[0] == "rlpt", (f"{block.where}: `{shown}` is not an rlpt command; run it through rlpt or mark "
                                   "the block <!-- no-run: why -->")
        args = argv[1:]
        for tok in args:
            path = tok.split("=", 1)[-1]
            if path.startswith(REPO_DIRS) and not re.search(r"[<*]", path):
                assert (ROOT / path).exists(), f"{block.where}: `{shown}` names missing {path}"
        err = io.StringIO()
        if mode == "run":
            with contextlib.redirect_stderr(err):
                rc = main(args)
            assert rc == 0, f"{block.where}: `{shown}` exited with {rc}:\n{err.getvalue()}"
            continue
        try:
            with contextlib.redirect_stderr(err):
                ns = build_parser().parse_args(args)
        except SystemExit as e:
            if e.code == 0:  # --help
                continue
            raise AssertionError(f"{block.where}: `{shown}` does not parse:\n{err.getvalue()}") from e
        recipe = getattr(ns, "recipe", None)
        if ns.noun in ("train", "tune") and recipe and recipe.startswith("agents/"):
            load_recipe(recipe, list(getattr(ns, "overrides", [])))  # keys and values must be valid


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.where)
def test_shell_block(block, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    check_shell_block(block)


@pytest.mark.parametrize("code", [
    "rlpt train agents/bc/hopper-medium-replay-cpu.yaml --no-such-flag",
    "rlpt train agents/bc/hopper-medium-replay-cpu.yaml no_such_key=1",
    "rlpt train agents/bc/no-such-recipe.yaml",
    "rlpt no-such-noun",
    "ray start --head",
])
def test_shell_check_catches_bad_commands(code, workdir, monkeypatch):
    from rlpt.errors import RlptError

    monkeypatch.chdir(workdir)
    with pytest.raises((AssertionError, RlptError)):
        check_shell_block(Block(ROOT / "README.md", 1, "bash", code + "\n", None))


@pytest.mark.slow
@pytest.mark.parametrize("page", PY_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    namespace = {"__name__": "__docs__"}
    for b in code_blocks(page):
        if b.lang == "python" and not (b.marker and b.marker[0] == "no-run"):
            exec(compile(b.code, b.where, "exec"), namespace)


# ----------------------------------------------------------------------------- the generated benchmarks page

def _make_docs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import make_docs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return make_docs


def test_benchmarks_page_matches_results(tmp_path):
    make_docs = _make_docs()
    text = make_docs.render_page(ROOT / "benchmarks" / "results", tmp_path)
    committed = (ROOT / "docs" / "benchmarks.md").read_text()
    assert committed == text, "docs/benchmarks.md is stale: run python benchmarks/make_docs.py"
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made and made == sorted(p.name for p in (ROOT / "docs" / "figures").glob("bench_*.png"))


def test_benchmarks_page_covers_every_results_file():
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    for f in sorted((ROOT / "benchmarks" / "results").iterdir()):
        if f.suffix in (".json", ".jsonl"):
            assert f"### {f.name}" in page or f"`{f.name}`" in page, f"{f.name} is not on the benchmarks page"


def test_benchmarks_page_follows_the_json(tmp_path):
    """A number changed in a results file changes the page (nothing is hand-copied)."""
    make_docs = _make_docs()
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    data = json.loads((results / "learning.json").read_text())
    before = make_docs.stat_cell(data["summary"]["hopper-medium-replay-v5"]["iql"])
    data["summary"]["hopper-medium-replay-v5"]["iql"]["mean"] += 11.1
    after = make_docs.stat_cell(data["summary"]["hopper-medium-replay-v5"]["iql"])
    (results / "learning.json").write_text(json.dumps(data))
    text = make_docs.render_page(results, None)
    assert f"| IQL | {after} |" in text and f"| IQL | {before} |" not in text
    (results / "new_bench.json").write_text(json.dumps({"command": "python benchmarks/new.py", "speed": 1.5}))
    text = make_docs.render_page(results, None)
    assert "### new_bench.json" in text and "| `speed` | 1.5000 |" in text


# ----------------------------------------------------------------------------- the docs site

def _mkdocs(cwd: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_docs_site_builds_strict(tmp_path):
    r = _mkdocs(ROOT, tmp_path / "site")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING" not in r.stderr, r.stderr
    site = tmp_path / "site"
    assert (site / "index.html").exists() and (site / "benchmarks" / "index.html").exists()
    for page in ("unio4", "iql", "calql", "bc", "contextwm", "vptr", "gfn", "kagi", "robofume"):
        assert (site / "methods" / page / "index.html").exists(), page
    if (ROOT / "docs" / "mjx.md").exists():
        assert "mjx/" in (site / "index.html").read_text(), "docs/mjx.md is not in the site's navigation"


def test_docs_site_build_fails_on_a_broken_link(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("mkdocs.yml", "mkdocs_hooks.py", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "docs", repo / "docs")
    shutil.copytree(ROOT / "benchmarks" / "results", repo / "benchmarks" / "results")
    with open(repo / "docs" / "security.md", "a") as f:
        f.write("\nSee [the benchmarks](benchmarks.md#no-such-section).\n")
    r = _mkdocs(repo, tmp_path / "site")
    assert r.returncode != 0 and "no-such-section" in r.stdout + r.stderr
