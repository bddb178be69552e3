"""The README's Python examples run as written (on a small regenerated dataset), so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_examples():
    assert python_blocks(README.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks(README.read_text()))))
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    from rlpt.collect.generate import make_dataset
    from rlpt.data import save_d4rl

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    # the file the quickstart or `rlpt data make hopper-medium-replay-v5` would leave, smaller
    save_d4rl(make_dataset("hopper-medium-replay-v5", size=4000, seed=0, quiet=True),
              tmp_path / "data" / "hopper-medium-replay-v5.hdf5")
    code = python_blocks(README.read_text())[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
