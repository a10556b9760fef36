"""nanolens_client against the real stack: typed results with units, verdict, provenance and
artefacts; the stored result on a second call; typed errors naming the field; retries only where
they can help; a folder uploaded, submitted, watched and fetched through the asyncio client."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image

from nanolens_cli.stack import free_port
from nanolens_client import (
    AlreadyExists,
    AsyncClient,
    Client,
    ClientSettings,
    InvalidArgument,
    Item,
    NotFound,
    ResourceExhausted,
    RetryPolicy,
    Unavailable,
)
from support import LIMIT_MB

pytestmark = pytest.mark.slow


def spectrum_text(shift: int = 0) -> str:
    """A two-column spectrum (Raman shift, counts) as an instrument exports it."""
    return "".join(f"{100 + 3 * i} {1000 + ((i + shift) % 7) * 10 + 400 * (abs(i - 300) < 6)}\n" for i in range(960))


def particles_png(seed: int = 0) -> bytes:
    """Dark disks on a bright, noisy background."""
    rng = np.random.default_rng(seed)
    image = np.full((256, 256), 200.0)
    yy, xx = np.mgrid[:256, :256]
    for _ in range(25):
        cy, cx, r = rng.uniform(20, 236), rng.uniform(20, 236), rng.uniform(5, 10)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 60.0
    image += rng.normal(0, 8, image.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def client(stack):
    with Client(stack[1].gateway) as c:
        yield c


def test_analyse_returns_a_typed_result_and_the_stored_one_the_second_time(client, tmp_path):
    path = tmp_path / "spectrum.txt"
    path.write_text(spectrum_text(1))
    first = client.analyse(path, "spectra", force=True)
    assert first.analysis == "spectra" and not first.cached and first["n_spectra"] == 1
    assert first.provenance.model_name and len(first.provenance.model_sha256) == 64
    assert first.provenance.service_name == "spectra" and "inference" in " ".join(first.provenance.timings)
    assert first.input.key.endswith("/spectrum.txt") and first.location.key.endswith("result.json")
    assert first.verdict is not None and first.trustworthy == (not first.verdict.warnings)
    name = sorted(first.artefacts)[0]
    data = client.artefact(first, name)
    assert hashlib.sha256(data).hexdigest() == first.artefacts[name].sha256
    again = client.analyse(path.read_bytes(), "ANALYSIS_KIND_SPECTRA", filename="spectrum.txt")
    assert again.cached and again.identity == first.identity
    written = client.save(again, tmp_path / "out")
    assert {p.name for p in written} == {"result.json", *again.artefacts}
    assert json.loads((tmp_path / "out" / "result.json").read_text())["identity"] == first.identity


def test_particle_sizes_carry_units_and_a_verdict(client):
    result = client.analyse(particles_png(), "particle_sizes", filename="disks.png", method="watershed",
                            pixel_size_nm=0.5)
    gmd = result.quantity("distribution.gmd_nm")
    assert gmd.unit == "nm" and gmd.value is not None and float(gmd) > 0
    assert result.quantity("image.pixel_size_nm").value == 0.5
    assert result.verdict is not None and result.verdict.trustworthy == (not result.verdict.warnings)
    assert "contrast_to_noise" in result.verdict.measures
    units = result.quantities()
    assert units["distribution.gmd_px"].unit == "px" and all(q.unit for q in units.values())
    with pytest.raises(KeyError, match="no field 'distribution.gmd_furlongs'"):
        result.quantity("distribution.gmd_furlongs")


def test_errors_are_typed_and_name_the_field(client, tmp_path):
    with pytest.raises(InvalidArgument) as info:
        client.analyse(particles_png(), "particle_sizes", filename="disks.png", pixel_size_nm=-1)
    assert info.value.field == "options.pixel_size_nm" and info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.from_platform and "pixel_size_nm" in str(info.value)
    with pytest.raises(NotFound):
        client.get_job("no-such-job")
    client.upload(b"1 2\n3 4\n", filename="a.txt", key="client-test/taken.txt")
    client.upload(b"1 2\n3 4\n", filename="a.txt", key="client-test/taken.txt")  # the same bytes: the same object
    with pytest.raises(AlreadyExists):
        client.upload(b"5 6\n7 8\n", filename="a.txt", key="client-test/taken.txt")
    with pytest.raises(ValueError, match="bytes need a filename"):
        client.analyse(b"1 2\n", "spectra")
    with pytest.raises(ValueError, match="unknown analysis 'spectrum'; one of"):
        client.analyse(b"1 2\n", "spectrum", filename="a.txt")
    with pytest.raises(FileNotFoundError):
        client.analyse(tmp_path / "missing.txt", "spectra")


def test_a_limit_the_gateway_names_is_not_retried_and_an_absent_gateway_is(stack):
    tries = []
    policy = RetryPolicy(attempts=4, initial_backoff=0.01, on_retry=lambda n, e, d: tries.append(e.code))
    with Client(stack[1].gateway, retry=policy) as client:
        with pytest.raises(ResourceExhausted, match="NANOLENS_MAX_UPLOAD_MB"):
            client.upload(b"\0" * ((LIMIT_MB + 1) << 20), filename="big.npy")
    assert tries == []
    with Client(f"127.0.0.1:{free_port()}", retry=policy) as nobody:
        with pytest.raises(Unavailable):
            nobody.list_models(timeout=30)
    assert tries == [grpc.StatusCode.UNAVAILABLE] * 3
    with Client(f"127.0.0.1:{free_port()}", retry=policy) as nobody:
        with pytest.raises(Unavailable):
            nobody.submit("somewhere/", "spectra")  # not idempotent: one try
    assert len(tries) == 3


def test_settings_come_from_the_environment_and_bad_ones_are_named():
    settings = ClientSettings.from_env({"NANOLENS_GATEWAY": "gw:1", "NANOLENS_TOKEN": "t",
                                        "NANOLENS_CLIENT_ATTEMPTS": "2"}, gateway="other:2")
    assert (settings.gateway, settings.token, settings.attempts) == ("other:2", "t", 2)
    assert settings.metadata() == (("authorization", "Bearer t"),) and "t" not in repr(settings).split("token")[-1:]
    with pytest.raises(ValueError, match="NANOLENS_CLIENT_ATTEMPTS='many'"):
        ClientSettings.from_env({"NANOLENS_CLIENT_ATTEMPTS": "many"})
    with pytest.raises(ValueError, match="NANOLENS_CLIENT_CERT and NANOLENS_CLIENT_KEY need NANOLENS_GATEWAY_CA"):
        ClientSettings(cert="c.pem").credentials()


def test_a_folder_uploaded_submitted_watched_and_fetched_with_the_async_client(stack, tmp_path):
    folder = tmp_path / "run"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / ("sub" if i else "") / f"s{i}.txt").write_text(spectrum_text(i))
    (folder / ".hidden").write_text("not sent")

    async def run():
        seen = []
        async with AsyncClient(stack[1].gateway) as client:
            uploads = await client.upload_folder(folder, "client-test/run-1", on_progress=seen.append)
            job = await client.submit("client-test/run-1/", "spectra")
            states = [j async for j in client.watch(job)]
            fetched = await client.results(job, tmp_path / "results")
        return seen, uploads, states, fetched

    seen, uploads, states, fetched = asyncio.run(run())
    assert [u.object.key for u in uploads] == ["client-test/run-1/s0.txt", "client-test/run-1/sub/s1.txt",
                                               "client-test/run-1/sub/s2.txt"]
    assert seen[-1].files_done == seen[-1].files_total == 3 and seen[-1].bytes_done == seen[-1].bytes_total
    assert [p.files_done for p in seen] == sorted(p.files_done for p in seen)
    assert states[-1].finished and states[-1].state == "done" and states[-1].done == 3
    assert fetched.state == "done" and not fetched.not_done
    documents = [p for p in fetched.written if p.name == "result.json"]
    assert len(documents) == 3 and all(json.loads(p.read_text())["analysis"] == "spectra" for p in documents)


def test_a_numpy_array_is_sent_as_npy(client):
    from nanolens_spectra.synthetic.swcnt import generate_map

    cube, truth = generate_map(6, 6, seed=5)
    result = client.analyse(cube, "spectral_map")
    assert result.input.key.endswith("/array.npy") and result["shape"][:2] == [6, 6]
    class_map = np.load(io.BytesIO(client.artefact(result, "class_map.npy")))
    assert class_map.shape == truth.shape


def test_many_items_over_one_call_each_answered_with_its_result_or_its_own_typed_error(stack, client):
    from nanolens_spectra.synthetic.swcnt import generate_spectra

    stored = client.upload(spectrum_text(40).encode(), filename="stored.txt").object
    items = [Item(f"text-{i}", spectrum_text(20 + i).encode(), "spectra", filename="s.txt") for i in range(4)]
    items += [Item("array", generate_spectra(n_per_class=1, seed=3).spectra, "spectra"),
              Item("stored", stored, "spectra"),
              Item("broken", b"not an array", "spectra", filename="broken.npy"),
              Item("bad-option", spectrum_text(1).encode(), "spectra", filename="s.txt", options={"no_such": 1})]
    answers = {a.id: a for a in client.analyse_many(items)}
    assert set(answers) == {i.id for i in items}
    assert {i for i, a in answers.items() if not a.ok} == {"broken", "bad-option"}
    assert isinstance(answers["broken"].error, InvalidArgument)
    assert answers["bad-option"].error.field == "request.options.no_such"
    assert answers["array"].result.document["n_spectra"] == 3 and answers["array"].result.input.key.endswith(
        "/array.npy")
    assert answers["stored"].result.input == stored and answers["text-0"].result.document["n_spectra"] == 1

    async def again():
        async with AsyncClient(stack[1].gateway) as aio:
            return {a.id: a async for a in aio.analyse_many(items[:6])}

    repeated = asyncio.run(again())
    assert all(a.ok and a.result.cached for a in repeated.values())
    assert {i: a.result.location for i, a in repeated.items()} == {i: answers[i].result.location for i in repeated}
