"""MkDocs hooks for the rlpt docs site (mkdocs.yml names this file).

- The site's home page is README.md, rewritten for the site: links into docs/ lose their `docs/` prefix, and the
  README's images under benchmarks/results/ are added to the site beside it. No copy of the README is committed.
- docs/mjx.md joins the nav when it exists.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent
IMAGE = re.compile(r"\]\((benchmarks/results/[^)\s]+\.png)\)")


def readme_for_site(text: str) -> tuple[str, list[str]]:
    """README text with links rewritten for a page at the docs root, and the repository images it shows."""
    images = IMAGE.findall(text)
    text = IMAGE.sub(lambda m: "](" + m.group(1).replace("benchmarks/results/", "figures/readme/") + ")", text)
    text = re.sub(r"\]\(docs/", "](", text)
    return text, images


def on_config(config, **kwargs):
    if (Path(config["docs_dir"]) / "mjx.md").exists() and not any(
            isinstance(item, dict) and "mjx.md" in item.values() for item in config["nav"]):
        config["nav"].insert(len(config["nav"]) - 1, {"GPU simulation (MJX)": "mjx.md"})
    return config


def on_files(files: Files, config, **kwargs) -> Files:
    text, images = readme_for_site((ROOT / "README.md").read_text())
    files.append(File.generated(config, "index.md", content=text))
    for image in images:
        src = ROOT / image
        files.append(File.generated(config, "figures/readme/" + src.name, abs_src_path=str(src)))
    return files
