"""The documentation: generated reference pages are fresh, every relative link and image resolves,
and nothing points outside the repository."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from support import REPO

SKIP = {".venv", ".tools", "node_modules", "gen", "build", "demo-output", "bench-output", ".git", ".pytest_cache"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HTML_SRC = re.compile(r"""<img[^>]+src=["']([^"']+)["']""")


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", REPO / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_files() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.md") if not SKIP & set(p.relative_to(REPO).parts))


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+\s+(.*)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_reference_pages_are_fresh():
    stale = _generator().stale_pages()
    assert not stale, f"stale reference pages, run `make docs`: {stale}"


def test_the_reference_covers_every_analysis_setting_and_rpc():
    gen = _generator()
    from nanolens_cli.main import all_settings
    from nanolens_gateway.domains import analyses

    results, settings, api = gen.results_page(), gen.settings_page(), gen.api_page()
    for _, analysis in analyses().values():
        assert f"## {analysis.name} (" in results
    for _, rows in all_settings():
        for env, _, _ in rows:
            assert f"`{env}`" in settings
    assert "| `Analyze` |" in api and "| `AnalyzeImage` |" in api


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_images_resolve(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    broken = []
    for target in LINK.findall(text) + HTML_SRC.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            continue  # http(s), mailto: not checked here (no internet)
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    assert not broken, f"{path.relative_to(REPO)}: links that do not resolve: {broken}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_docs_do_not_point_outside_the_repository(path):
    text = path.read_text()
    assert "../shared" not in text and "shared/DESIGN" not in text, (
        f"{path.relative_to(REPO)} refers to files outside the repository")
