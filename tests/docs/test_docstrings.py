"""Public functions of every service's science/ package carry numpydoc docstrings: a summary line,
a Parameters section naming every argument, and a Returns (or Yields) section when they return."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCIENCE = sorted(REPO.glob("services/*/nanolens_*/science/*.py"))


def public_functions(path: Path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node


def problems(node: ast.FunctionDef) -> list[str]:
    doc = ast.get_docstring(node)
    if not doc:
        return ["no docstring"]
    found = []
    sections = set(re.findall(r"^(\w+)\n-{3,}$", doc, flags=re.M))
    every = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
    args = [a.arg for a in every if a.arg not in ("self", "cls")]
    if args:
        if "Parameters" not in sections:
            found.append("no Parameters section")
        else:
            block = doc.split("Parameters\n----------", 1)[1]
            block = re.split(r"^\w+\n-{3,}$", block, flags=re.M)[0]
            named = {n.strip() for line in re.findall(r"^(\S[^:\n]*?)(?: :.*)?$", block, flags=re.M)
                     for n in line.split(",")}
            missing = [a for a in args if a not in named]
            if missing:
                found.append(f"Parameters does not name {missing}")
    returns_none = isinstance(node.returns, ast.Constant) and node.returns.value is None
    if node.returns is not None and not returns_none and not sections & {"Returns", "Yields"}:
        found.append("no Returns section")
    return found


def test_there_is_science_to_check():
    assert len(SCIENCE) >= 10, SCIENCE


@pytest.mark.parametrize("path", SCIENCE, ids=lambda p: str(p.relative_to(REPO)))
def test_public_science_functions_have_numpydoc_docstrings(path):
    bad = {node.name: problems(node) for node in public_functions(path)}
    bad = {name: p for name, p in bad.items() if p}
    assert not bad, f"{path.relative_to(REPO)}: {bad}"
