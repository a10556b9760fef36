"""The identity of the gateway code that decides a domain's results: its adapter and the readers it uses.

A result depends on the code that decodes its input (pixel size, polarity, a spectrum's parsing)
as much as on the model, so the adapter module and every module of the adapters and of
``nanolens_formats`` that it imports, directly or not, are hashed into the result's identity.
The hash is taken over each module's syntax tree with docstrings left out, so a comment or
docstring edit keeps every stored result while any change to what runs re-keys the results of
exactly the domains whose code changed. The core (server, jobs, storage) is not hashed: it moves
bytes and documents, it does not decide numbers.

A module that runs a program to decide results names it in ``RESULT_PROGRAMS`` (the scale-bar
reader runs ``tesseract``): the program's version, or its absence, is hashed with the code, so
installing or upgrading it re-keys what it decided (the gateway reads it once, when it starts).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import shutil
import subprocess
from functools import cache
from pathlib import Path

#: packages whose modules decide results when an adapter imports them
RESULT_CODE_PACKAGES = ("nanolens_gateway.adapters", "nanolens_formats")
Roots = tuple[Path, ...] | None  # source roots to read modules from; None: where Python imports them from


def module_file(module: str, roots: Roots = None) -> Path | None:
    """The source file of ``module`` under one of ``roots`` (None: the installed one), None when there is none."""
    if roots is None:
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            return None
        return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None
    parts = module.split(".")
    for root in roots:
        for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def _decides_results(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in RESULT_CODE_PACKAGES)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalised_source(path: Path) -> str:
    """The module's syntax tree without docstrings (comments and layout are gone in any tree)."""
    return ast.dump(_without_docstrings(ast.parse(path.read_text(), str(path))), include_attributes=False)


def _imported(tree: ast.AST, roots: Roots) -> set[str]:
    """Modules of RESULT_CODE_PACKAGES that ``tree`` imports (``from pkg import module`` included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if module_file(f"{node.module}.{alias.name}", roots) is not None)
    return {m for m in found if _decides_results(m)}


def result_code_modules(module: str, roots: Roots = None) -> dict[str, Path]:
    """``module`` and every result-deciding module it imports, transitively: name -> file."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, roots)
        if path is None:
            raise FileNotFoundError(f"no source for {name}" + (f" under {[str(r) for r in roots]}" if roots else ""))
        seen[name] = path
        todo += sorted(_imported(ast.parse(path.read_text(), str(path)), roots) - set(seen))
    return seen


def result_programs(tree: ast.AST) -> tuple[str, ...]:
    """The programs a module's ``RESULT_PROGRAMS = (...)`` names (a literal tuple of names)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "RESULT_PROGRAMS"
                                                for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def program_version(program: str) -> str:
    """The first line ``program --version`` prints, or ``absent`` when it is not on PATH."""
    path = shutil.which(program)
    if path is None:
        return "absent"
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unusable: {type(exc).__name__}"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else f"exit {done.returncode}"


def result_code_sha256(module: str, roots: Roots = None) -> str:
    """sha256 over the normalised trees of :func:`result_code_modules`, in name order, and the
    versions of the programs they name in ``RESULT_PROGRAMS``."""
    digest = hashlib.sha256()
    for name, path in sorted(result_code_modules(module, roots).items()):
        tree = ast.parse(path.read_text(), str(path))
        digest.update(name.encode() + b"\0" + normalised_source(path).encode() + b"\0")
        for program in result_programs(tree):
            digest.update(program.encode() + b"\0" + program_version(program).encode() + b"\0")
    return digest.hexdigest()


@cache
def adapter_sha256(module: str) -> str:
    """:func:`result_code_sha256` of an installed adapter, once per process (it is in every identity)."""
    return result_code_sha256(module)
