"""Imports go one way (runtime <- services / gateway <- CLI), serving code never imports torch, and no
module imports another module's private names (a shared type wants a public home)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVICE_PACKAGES = {p.name: p for p in sorted(REPO.glob("services/*/nanolens_*")) if p.is_dir()}


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import statement, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def forbidden_imports(root: Path, forbidden: set[str]) -> list[str]:
    return [f"{path.relative_to(REPO)}:{line} imports {module}"
            for path in sources(root) for module, _, line in imports(path) if top(module) in forbidden]


def test_the_domain_packages_are_found():
    assert {"nanolens_spectra", "nanolens_tem"} <= set(SERVICE_PACKAGES)


def test_the_runtime_imports_nothing_above_it():
    above = {"nanolens_formats", "nanolens_gateway", "nanolens_cli", *SERVICE_PACKAGES}
    assert forbidden_imports(REPO / "runtime", above) == []


@pytest.mark.parametrize("package", sorted(SERVICE_PACKAGES))
def test_a_domain_service_imports_only_the_runtime(package):
    others = {"nanolens_gateway", "nanolens_cli", *(p for p in SERVICE_PACKAGES if p != package)}
    assert forbidden_imports(SERVICE_PACKAGES[package], others) == []


def test_the_shared_science_imports_nothing_of_ours():
    """Shared science (``science/``) is hashed into the domains that import it: it leans on nothing
    whose code would then escape their serving-code hash."""
    ours = {"nanolens", "nanolens_runtime", "nanolens_formats", "nanolens_gateway", "nanolens_cli", *SERVICE_PACKAGES}
    assert forbidden_imports(REPO / "science", ours) == []


def test_the_formats_import_only_the_runtime():
    """The readers are shared by the gateway, the CLI and the benchmarks: they depend on nothing of theirs."""
    assert forbidden_imports(REPO / "formats", {"nanolens_gateway", "nanolens_cli", *SERVICE_PACKAGES}) == []


def test_the_gateway_core_names_no_domain():
    """Adapters import the core, never the reverse: the registry finds them by name (DOMAIN_MODULES)."""
    core = [path for path in sources(REPO / "gateway") if "adapters" not in path.parts]
    bad = [f"{path.relative_to(REPO)}:{line} imports {module}" for path in core for module, names, line in imports(path)
           if module.startswith("nanolens_gateway.adapters")
           or (module == "nanolens_gateway" and "adapters" in names)]
    assert core and bad == []


def test_the_gateway_imports_no_service():
    assert forbidden_imports(REPO / "gateway", {"nanolens_cli", *SERVICE_PACKAGES}) == []


def test_the_client_imports_only_grpc_protobuf_and_the_gateway_stubs():
    """nanolens-client installs with grpcio and protobuf alone (numpy only for callers' arrays)."""
    allowed = {"grpc", "numpy", "nanolens_client", *sys.stdlib_module_names}
    stubs = ("google.protobuf", "nanolens.common.v1", "nanolens.gateway.v1")
    bad = [f"{path.relative_to(REPO)}:{line} imports {module}"
           for path in sources(REPO / "clients" / "python") for module, _, line in imports(path)
           if top(module) not in allowed and not any(module == s or module.startswith(s + ".") for s in stubs)
           and not (path.name == "setup.py" and top(module) == "setuptools")]
    assert bad == []


#: what of the gateway the CLI may use: the domain registry (``nanolens analyze <domain>``, the local
#: stack), the settings (``nanolens settings``) and the token helpers (``nanolens token create``)
CLI_GATEWAY_SURFACE = {"nanolens_gateway.domains": None, "nanolens_gateway.settings": {"GatewaySettings"},
                       "nanolens_gateway.auth": {"ACTIONS", "parse_tokens", "token_digest"}}


def test_the_cli_uses_only_the_gateways_public_surface_and_calls_it_through_the_client():
    bad = []
    for path in sources(REPO / "cli"):
        for module, names, line in imports(path):
            where = f"{path.relative_to(REPO)}:{line} imports {module}"
            if top(module) == "nanolens_gateway":
                allowed = CLI_GATEWAY_SURFACE.get(module, set())
                if module not in CLI_GATEWAY_SURFACE or (allowed is not None and not set(names) <= allowed):
                    bad.append(f"{where} {names}")
            elif top(module) == "nanolens" or top(module) == "grpc":  # the stubs and gRPC: nanolens_client's
                bad.append(where)
    assert bad == []


def test_the_cli_modules_import_no_circle():
    """Each command group is its own module; main.py gathers them and none of them imports it."""
    package = REPO / "cli" / "nanolens_cli"
    graph = {p.stem: {m.split(".")[1] for m, _, _ in imports(p) if m.startswith("nanolens_cli.")}
             | {n for m, names, _ in imports(p) if m == "nanolens_cli" for n in names}
             for p in sources(package)}
    assert not [m for m, deps in graph.items() if "main" in deps]

    def circle(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = circle(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    assert [c for m in graph if (c := circle(m, m, (m,)))] == []


def serving_code() -> list[Path]:
    roots = [REPO / "runtime", REPO / "science", REPO / "formats", REPO / "gateway"]
    for package in SERVICE_PACKAGES.values():
        roots += [package / "science", package / "synthetic"]
    files = [f for root in roots if root.exists() for f in sources(root)]
    files += [package / name for package in SERVICE_PACKAGES.values() for name in ("service.py", "__main__.py")
              if (package / name).exists()]
    return files


def test_serving_code_never_imports_torch():
    """The serving image carries onnxruntime, not torch."""
    bad = [f"{path.relative_to(REPO)}:{line} imports {module}"
           for path in serving_code() for module, _, line in imports(path) if top(module) in ("torch", "onnxscript")]
    assert bad == []


def test_no_private_names_are_imported_across_modules():
    ours = {"nanolens", "nanolens_runtime", "nanolens_micrographs", "nanolens_search", "nanolens_formats",
            "nanolens_gateway", "nanolens_cli", "nanolens_client", *SERVICE_PACKAGES}
    roots = [REPO / "runtime", REPO / "science", REPO / "formats", REPO / "gateway", REPO / "cli", REPO / "clients",
             REPO / "bench", *SERVICE_PACKAGES.values()]
    bad = [f"{path.relative_to(REPO)}:{line} imports {name} from {module}"
           for root in roots for path in sources(root) for module, names, line in imports(path)
           if top(module) in ours for name in names if name.startswith("_") and not name.startswith("__")]
    assert bad == []


def test_the_benchmarks_use_no_gateway_internals():
    """Benchmarks time the system from outside (the client, the local stack) or a service's own code
    in process; what the gateway adds is measured through it, never by importing it."""
    assert forbidden_imports(REPO / "bench", {"nanolens_gateway"}) == []
