"""The `nanolens` command against the running stack, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
from PIL import Image

from nanolens_cli.stack import free_port
from nanolens_spectra.synthetic.swcnt import generate_map, generate_spectra

pytestmark = pytest.mark.slow


def nanolens(stack, *args, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, **stack[1].client_env())
    result = subprocess.run([sys.executable, "-m", "nanolens_cli.main", *args], env=env, capture_output=True,
                            text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    return result


def test_analyze_spectra_json_and_out(stack, tmp_path):
    batch = generate_spectra(n_per_class=2, seed=3)
    path = tmp_path / "cells.csv"
    np.savetxt(path, np.vstack([batch.axis, batch.spectra]), delimiter=",", fmt="%.3f")
    out = tmp_path / "out"
    result = json.loads(nanolens(stack, "analyze", "spectra", str(path), "--json", "--out", str(out)).stdout)
    assert result["n_spectra"] == 6
    assert {p.name for p in out.iterdir()} == {"result.json", "probabilities.npy", "ood_score.npy", "spectra.png"}
    assert json.loads((out / "result.json").read_text())["identity"] == result["identity"]
    text = nanolens(stack, "analyze", "spectra", str(path)).stdout
    assert "swcnt-endosome" in text and "#5" in text and "warning" not in text


def test_a_spectrum_unlike_the_training_data_exits_3_with_the_reason(stack, tmp_path):
    axis = np.linspace(100, 3000, 1024)
    polystyrene = 800 / (1 + ((axis - 1001) / 4) ** 2) + 400 / (1 + ((axis - 1602) / 5) ** 2) + 200
    path = tmp_path / "polystyrene.txt"
    np.savetxt(path, np.column_stack([axis, polystyrene]), fmt="%.3f")
    shown = nanolens(stack, "analyze", "spectra", str(path), check=False)
    assert shown.returncode == 3, shown.stderr  # stored all the same; the class is a guess
    assert "OUT OF DOMAIN" in shown.stdout and "warning: do not trust this result: 1 of 1 spectra" in shown.stdout


def test_analyze_map_is_detected_from_the_array(stack, tmp_path):
    cube, _ = generate_map(8, 8, seed=4)
    path = tmp_path / "map.npy"
    np.save(path, cube)
    out = tmp_path / "out"
    text = nanolens(stack, "analyze", "spectra", str(path), "--out", str(out)).stdout
    assert "map 8 x 8 x 1024" in text
    assert np.load(out / "class_map.npy").shape == (8, 8)
    assert (out / "class_map.png").read_bytes().startswith(b"\x89PNG")


def test_models_list(stack):
    from nanolens_spectra.service import serving_code_sha256 as spectra_code
    from nanolens_tem.service import serving_code_sha256 as tem_code

    listed = json.loads(nanolens(stack, "models", "list", "--json").stdout)
    services = {s["service"]: s["models"] for s in listed["services"]}
    assert any(m["is_default"] for m in services["spectra"])
    # through the gateway, every entry names the serving code that result identities depend on
    codes = {s["service"]: {m["code_sha256"] for m in s["models"]} for s in listed["services"]}
    assert codes["spectra"] == {spectra_code()} and codes["tem"] == {tem_code()}
    assert all(len(code) == 1 and len(next(iter(code))) == 64 for code in codes.values())
    # the plain listing: one line per model, classes only where a model has them, and under a
    # trained model what it was trained on
    shown = nanolens(stack, "models", "list").stdout.splitlines()
    lines = [line for line in shown if not line.startswith(" ")]
    trained = [line.strip() for line in shown if line.startswith(" ")]
    assert len(lines) == sum(len(s["models"]) for s in listed["services"])
    assert len(trained) == sum(bool(m.get("training_data")) for s in listed["services"] for m in s["models"]) > 0
    assert all(line.startswith("trained on: ") for line in trained)
    assert not any(line.rstrip().endswith("classes=") or "classes= " in line for line in lines)
    assert any(line.startswith("spectra") and "classes=" in line for line in lines)


def test_errors_are_one_clear_line(stack, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5\n")
    result = nanolens(stack, "analyze", "spectra", str(bad), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: INVALID_ARGUMENT") and "columns" in result.stderr
    missing = nanolens(stack, "analyze", "spectra", str(tmp_path / "nope.csv"), check=False)
    assert missing.returncode == 2 and "not a file" in missing.stderr
    good = tmp_path / "good.csv"
    good.write_text("1,2,3\n4,5,6\n")
    for option in ("array_key", "=spectra"):
        shape = nanolens(stack, "analyze", "spectra", str(good), "--option", option, check=False)
        assert shape.returncode == 2 and f"--option {option!r} is not KEY=VALUE" in shape.stderr, shape.stderr
    typo = nanolens(stack, "analyze", "spectra", str(good), "--option", "arraykey=b", check=False)
    assert typo.returncode == 1 and "option 'arraykey'" in typo.stderr and "array_key" in typo.stderr


def _up_argv(ports: dict[str, int], data_dir) -> list[str]:
    """``nanolens up`` with every port chosen (the defaults may be taken on this machine) and its data
    in ``data_dir`` (never the user's own)."""
    argv = [sys.executable, "-m", "nanolens_cli.main", "up", "--data-dir", str(data_dir)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    return argv


def _stack_ports() -> dict[str, int]:
    from nanolens_gateway.domains import domains

    return {name: free_port() for name in ["gateway", "s3", *(d.name for d in domains())]}


@pytest.mark.parametrize("taken_by", ["gateway", "s3"])
def test_up_refuses_a_taken_port_in_one_line_and_starts_nothing(taken_by, tmp_path):
    """Another program on a port: one line naming it, and the stack never attaches to that program
    (with port 9000 taken it used to say "stack ready" and use the other program's S3)."""
    ports = _stack_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports[taken_by] = taken.getsockname()[1]
        result = subprocess.run(_up_argv(ports, tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "stack ready" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: port {ports[taken_by]} on 127.0.0.1 ({taken_by}) is in use by another program "
                      "(Address already in use); stop it or choose another port"], result.stderr
    assert "Traceback" not in result.stderr
    for name, port in ports.items():  # nothing was started
        if name != taken_by:
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_children_die_with_the_stack_when_it_is_killed(tmp_path):
    """SIGKILL leaves no handler to run: the kernel's parent-death signal stops every child."""
    ports = _stack_ports()
    proc = subprocess.Popen(_up_argv(ports, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if "stack ready" in line:
                break
        for port in ports.values():
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 30
        alive = set(ports.values())
        while alive and time.monotonic() < deadline:
            for port in list(alive):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                except OSError:
                    alive.discard(port)
            time.sleep(0.2)
        assert not alive, f"still listening after the stack was killed: {sorted(alive)}"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_prints_endpoints_and_stops_everything_on_sigterm(tmp_path):
    ports = _stack_ports()
    proc = subprocess.Popen(_up_argv(ports, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "stack ready" in line:
                break
        if not any("stack ready" in line for line in lines):  # it ended early: say why (one flaky run said nothing)
            proc.kill()
            pytest.fail(f"`nanolens up` exited {proc.wait(10)} before the stack was ready; stdout {''.join(lines)!r}, "
                        f"stderr {proc.stderr.read()[-2000:]!r}")
        assert f"gateway  127.0.0.1:{ports['gateway']}" in "".join(lines)
        assert f"data     {tmp_path}\n" in "".join(lines)  # where its objects and jobs are kept
        for port in ports.values():
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for port in ports.values():  # nothing it started is left listening
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_train_register_and_choose_the_model_per_request(stack, tmp_path):
    batch = generate_spectra(n_per_class=12, seed=21)
    data = tmp_path / "mine.npz"
    names = np.array(batch.class_names)[batch.labels]
    np.savez(data, spectra=batch.spectra, labels=names, axis=batch.axis)
    trained = nanolens(stack, "spectra", "train", str(data), "--name", "my-lab", "--version", "3", "--folds", "4",
                       "--out", str(tmp_path / "bundle"), "--register")
    assert "4-fold CV accuracy" in trained.stdout and "registered: s3://models/my-lab/3/" in trained.stdout
    assert (tmp_path / "bundle" / "my-lab" / "3" / "manifest.json").is_file()
    listed = next(s["models"] for s in json.loads(nanolens(stack, "models", "list", "--json").stdout)["services"]
                  if s["service"] == "spectra")
    assert any(m["name"] == "my-lab" and m["version"] == "3" for m in listed)
    csv = tmp_path / "cells.csv"
    np.savetxt(csv, np.vstack([batch.axis, batch.spectra[:5]]), delimiter=",", fmt="%.3f")
    result = json.loads(nanolens(stack, "analyze", "spectra", str(csv), "--model", "my-lab:3", "--json").stdout)
    assert result["provenance"]["model_name"] == "my-lab" and result["provenance"]["model_version"] == "3"
    again = nanolens(stack, "spectra", "train", str(data), "--name", "my-lab", "--version", "3", "--folds", "4",
                     "--out", str(tmp_path / "bundle2"), "--register", check=False)
    assert again.returncode == 2 and "already registered" in again.stderr


def test_analyze_tem_image_with_calibration_in_the_file(stack, tmp_path):
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    synthetic = generate(seed=8, params=SynthParams(shape=(256, 256)))
    image = tmp_path / "agglomerates.tif"
    tifffile.imwrite(image, synthetic.image, imagej=True, resolution=(1 / 0.8, 1 / 0.8), metadata={"unit": "nm"})
    out = tmp_path / "out"
    result = json.loads(nanolens(stack, "analyze", "tem", str(image), "--method", "watershed", "--json",
                                 "--out", str(out)).stdout)
    assert result["method"] == "watershed"
    assert result["image"]["pixel_size_source"] == "ImageJ" and abs(result["image"]["pixel_size_nm"] - 0.8) < 1e-3
    assert result["distribution"]["count"] == result["n_particles"] > 0
    assert {p.name for p in out.iterdir()} == {"result.json", "labels.tif", "overlay.png", "psd.png"}
    labels = tifffile.imread(out / "labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == (256, 256)
    assert int(labels.max()) == max(p["id"] for p in result["particles"])
    text = nanolens(stack, "analyze", "tem", str(image), "--method", "ann", "--pixel-size-nm", "2").stdout
    assert "ann:" in text and "nm/px (request)" in text


def test_analyze_tem_digitalmicrograph_file_sizes_in_nm(stack, tmp_path):
    from dmfile import dm_image
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    synthetic = generate(seed=9, params=SynthParams(shape=(256, 256)))
    image = tmp_path / "agglomerates.dm4"
    image.write_bytes(dm_image(synthetic.image.astype(np.uint16) * 64, 0.004, "µm", version=4, thumbnail=True))
    result = json.loads(nanolens(stack, "analyze", "tem", str(image), "--method", "watershed", "--json").stdout)
    assert result["image"]["pixel_size_source"] == "DigitalMicrograph"
    assert abs(result["image"]["pixel_size_nm"] - 4.0) < 1e-4
    assert result["distribution"]["unit"] == "nm"
    # the baseline's identity and provenance carry the hash of its code (a code change recomputes)
    assert result["provenance"]["model_name"] == "watershed" and len(result["provenance"]["model_sha256"]) == 64
    particle = result["particles"][0]
    assert abs(particle["diameter_nm"] - 4.0 * particle["diameter_px"]) < 1e-3 * particle["diameter_nm"]


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract not installed (make tools)")
def test_analyze_tem_reads_the_scale_bar_when_the_file_states_no_pixel_size(stack, tmp_path):
    from scalebars import FONT, with_scale_bar

    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    if not FONT.exists():
        pytest.skip(f"{FONT} absent (apt-get install fonts-dejavu-core)")
    synthetic = generate(seed=8, params=SynthParams(shape=(256, 320))).image
    barred, bare = tmp_path / "barred.png", tmp_path / "unlabelled.png"
    Image.fromarray(with_scale_bar(synthetic, "info bar", "200 nm", 100, font_px=14)).save(barred)
    Image.fromarray(with_scale_bar(synthetic, "info bar", None, 100, font_px=14)).save(bare)
    result = json.loads(nanolens(stack, "analyze", "tem", str(barred), "--method", "watershed", "--json").stdout)
    image = result["image"]
    assert image["pixel_size_source"] == "scale bar" and abs(image["pixel_size_nm"] - 2.0) < 1e-9
    assert image["scale_bar"]["label"] == "200 nm" and image["scale_bar"]["length_px"] == 100
    assert result["distribution"]["unit"] == "nm" and result["distribution"]["gmd_nm"] > 0
    text = nanolens(stack, "analyze", "tem", str(barred), "--method", "watershed").stdout
    assert '2 nm/px (scale bar: "200 nm" over 100 px)' in text
    unread = nanolens(stack, "analyze", "tem", str(bare), "--method", "watershed", check=False).stdout
    assert "pixel size unknown" in unread and "warning: a scale bar (100 px" in unread


def test_a_registered_cnn_is_asked_for_by_name_and_a_pinned_version_is_the_one_that_runs(stack, tmp_path):
    from nanolens_tem.bundles import latest_bundle
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate
    from support import renamed_bundle

    bundle = renamed_bundle(latest_bundle("tem-unet"), tmp_path / "bundles", "tem-unet-facility", "1")
    older = renamed_bundle(latest_bundle("tem-unet"), tmp_path / "bundles", "tem-unet", "0.9.0")
    nanolens(stack, "models", "register", str(older))
    assert "registered: s3://models/tem-unet-facility/1/" in nanolens(stack, "models", "register", str(bundle)).stdout
    again = nanolens(stack, "models", "register", str(bundle), check=False)
    assert again.returncode == 2 and "already registered" in again.stderr
    image = tmp_path / "agglomerates.npy"
    np.save(image, generate(seed=10, params=SynthParams(shape=(128, 128))).image)
    result = json.loads(nanolens(stack, "analyze", "tem", str(image), "--model", "tem-unet-facility", "--json").stdout)
    assert result["method"] == "cnn"
    assert (result["provenance"]["model_name"], result["provenance"]["model_version"]) == ("tem-unet-facility", "1")
    pinned = json.loads(nanolens(stack, "analyze", "tem", str(image), "--model", "tem-unet:0.9.0", "--json").stdout)
    assert (pinned["provenance"]["model_name"], pinned["provenance"]["model_version"]) == ("tem-unet", "0.9.0")
    wrong = nanolens(stack, "analyze", "tem", str(image), "--model", "tem-ann", "--method", "cnn", check=False)
    assert wrong.returncode == 1 and "INVALID_ARGUMENT" in wrong.stderr
    assert "method cnn needs a model of task" in wrong.stderr


def test_analyze_tem_with_test_time_augmentation(stack, tmp_path):
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    image = tmp_path / "agglomerates.npy"
    np.save(image, generate(seed=11, params=SynthParams(shape=(128, 128))).image)
    result = json.loads(nanolens(stack, "analyze", "tem", str(image), "--tta", "--json").stdout)
    assert result["method"] == "cnn" and result["options"]["tta"] == "true" and result["n_particles"] > 0
    refused = nanolens(stack, "analyze", "tem", str(image), "--tta", "--method", "hough", check=False)
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr
    assert "test_time_augmentation applies to the cnn method only" in refused.stderr


def test_analyze_tem_refuses_a_mask(stack, tmp_path):
    mask = tmp_path / "mask.png"
    Image.fromarray(((np.indices((64, 64)).sum(axis=0) % 16) < 8).astype(np.uint8) * 255).save(mask)
    result = nanolens(stack, "analyze", "tem", str(mask), check=False)
    assert result.returncode == 1 and "INVALID_ARGUMENT" in result.stderr and "mask" in result.stderr


def test_a_float_image_too_big_for_one_message_is_refused_with_the_reason(stack, tmp_path):
    """4096 x 4096 float32 is within the pixel limit but is 64 MiB, the message limit to the service."""
    levels = (np.indices((4096, 4096)).sum(axis=0) // 256 % 8).astype(np.float32) / 8  # 8 grey levels
    image = tmp_path / "big-float.tif"
    tifffile.imwrite(image, levels, compression="zlib")
    assert image.stat().st_size < 16 * 2**20  # small file, big image
    result = nanolens(stack, "analyze", "tem", str(image), "--method", "watershed", check=False)
    assert result.returncode == 1 and "RESOURCE_EXHAUSTED" in result.stderr
    assert "NANOLENS_MAX_MESSAGE_MB" in result.stderr and "64 MiB" in result.stderr


def test_a_result_not_to_trust_says_so_and_exits_3(stack, tmp_path):
    """A PNG of random noise: the particles 'found' are flagged, the warning printed, exit status 3
    (the result is stored all the same; --json carries the same warnings)."""
    from PIL import Image

    noise = np.random.default_rng(1).integers(0, 255, (256, 256)).astype(np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path)
    shown = nanolens(stack, "analyze", "tem", str(path), "--method", "watershed", check=False)
    assert shown.returncode == 3, shown.stderr
    assert "warning: do not trust this result" in shown.stdout and "noise" in shown.stdout
    as_json = nanolens(stack, "analyze", "tem", str(path), "--method", "watershed", "--json", check=False)
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["quality"]["trustworthy"] is False


def test_sem_train_register_classify_embed_and_search(stack, tmp_path):
    from nanolens_sem.synthetic.textures import generate

    folder = tmp_path / "textures"
    for seed in range(40):
        t = generate(seed, (128, 128))
        (folder / t.kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray((t.image * 255).astype(np.uint8)).save(folder / t.kind / f"{seed}.png")
    trained = nanolens(stack, "sem", "train", str(folder), "--name", "texture-kinds", "--version", "1",
                       "--out", str(tmp_path / "heads"), "--register")
    assert "cross-validation on 40 items from 40 images" in trained.stdout
    assert "registered: s3://models/texture-kinds/1/" in trained.stdout
    assert re.search(r"unlike every class above a cosine distance of [0-9.]+ to the nearest training image "
                     r"\([0-2] of 40 held-out items above it\)", trained.stdout), trained.stdout
    assert (tmp_path / "heads" / "texture-kinds" / "1" / "confusion.png").is_file()
    query = tmp_path / "query.png"
    truth = generate(4321, (128, 128))
    Image.fromarray((truth.image * 255).astype(np.uint8)).save(query)
    out = tmp_path / "out"
    result = json.loads(nanolens(stack, "analyze", "sem", str(query), "--classify", "texture-kinds", "--lens", "all",
                                 "--embed", "cli-textures", "--json", "--out", str(out)).stdout)
    assert result["classification"]["head"] == "texture-kinds:1"
    assert result["classification"]["label"] in {"particles", "wires", "porous", "fibres"}
    # a new texture of a known kind: like the training images, no warning (exit 0)
    assert 0 <= result["classification"]["ood_score"] < 1 and not result["classification"]["out_of_domain"]
    assert result["quality"] == {"trustworthy": True, "warnings": []}
    assert result["options"]["classify"] == "texture-kinds:1" and len(result["lens"]) == 5
    assert {"lens_enc1.png", "lens_latent.png", "embedding.npy"} <= {p.name for p in out.iterdir()}
    text = nanolens(stack, "analyze", "sem", str(query), "--anomaly").stdout
    assert "anomaly:" in text and "percentile of the training tiles" in text
    nanolens(stack, "analyze", "sem", str(folder / truth.kind / next(iter(os.listdir(folder / truth.kind)))),
             "--embed", "cli-textures")
    # the same bytes upload to the same object: the query is the collection's first item
    hits = nanolens(stack, "sem", "search", "cli-textures", str(query), "-k", "3").stdout
    assert hits.startswith("1 of 2 images in cli-textures") and "left out" in hits and "s3://raw/" in hits
    missing = nanolens(stack, "sem", "search", "no-such-collection", str(query), check=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    # a region of the query (embedded anew: the query's own item is a hit) and a metadata filter PNGs do not meet
    region = nanolens(stack, "sem", "search", "cli-textures", str(query), "--region", "0,0,96,96").stdout
    assert region.startswith("2 of 2 images in cli-textures") and "left out" not in region
    none = nanolens(stack, "sem", "search", "cli-textures", str(query), "--where", "detector=InLens").stdout
    assert none.startswith("0 of 2 images")
    bad = nanolens(stack, "sem", "search", "cli-textures", str(query), "--where", "colour=red", check=False)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "unknown filter field 'colour'" in bad.stderr
    bad = nanolens(stack, "sem", "search", "cli-textures", str(query), "--region", "0,0,96", check=False)
    assert bad.returncode == 2 and "X,Y,WIDTH,HEIGHT" in bad.stderr
