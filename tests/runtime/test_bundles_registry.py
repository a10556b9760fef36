"""Bundles are verified on load; the registry finds, orders, fetches and registers them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nanolens_runtime.bundles import ModelBundle, code_sha256, version_key, write_bundle
from nanolens_runtime.errors import AlreadyExists, InvalidModelBundle, NotFound
from nanolens_runtime.inference import select_providers
from nanolens_runtime.registry import ModelRegistry, upload_bundle
from support import linear_softmax_onnx, make_bundle


def test_bundle_round_trip(tmp_path):
    bundle = ModelBundle.load(make_bundle(tmp_path))
    assert (bundle.name, bundle.version, bundle.class_names) == ("toy", "1", ["a", "b", "c"])
    assert len(bundle.sha256) == 64


def test_tampered_graph_is_refused(tmp_path):
    path = make_bundle(tmp_path)
    (path / "model.onnx").write_bytes((path / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(InvalidModelBundle, match="sha256"):
        ModelBundle.load(path)


@pytest.mark.parametrize("key", ["task", "class_names", "training_data"])
def test_manifest_without_a_required_key_is_refused(tmp_path, key):
    path = make_bundle(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest[key]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidModelBundle, match=key):
        ModelBundle.load(path)


def test_manifest_that_is_not_json_is_refused(tmp_path):
    path = make_bundle(tmp_path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidModelBundle, match="not valid JSON"):
        ModelBundle.load(path)


def test_versions_sort_numerically():
    assert sorted(["10", "2", "1.10", "1.9"], key=version_key) == ["1.9", "1.10", "2", "10"]


def registry(roots, store=None, bucket="models", cache_dir=None) -> ModelRegistry:
    return ModelRegistry("spectra-classification", "toy", roots, select_providers("cpu"), store=store, bucket=bucket,
                         cache_dir=cache_dir)


def test_registry_default_and_newest(tmp_path):
    make_bundle(tmp_path, version="2", seed=2)
    make_bundle(tmp_path, version="10", seed=10)
    make_bundle(tmp_path, name="other-task", task="tem-psd")
    reg = registry([tmp_path])
    reg.load_all()
    assert reg.get().bundle.version == "10"
    assert reg.get("toy", "2").bundle.version == "2"
    assert [m.version for m in reg.infos()] == ["2", "10"]  # the other task's bundle is not served
    assert [m.is_default for m in reg.infos()] == [False, True]
    assert {m.training_data for m in reg.infos()} == {"test"}  # the manifest's training_data.source
    with pytest.raises(NotFound):
        reg.get("toy", "3")
    with pytest.raises(NotFound):
        reg.get("nope")
    out = reg.get().run({"spectra": np.ones((4, 16), np.float32)})[0]
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_registry_with_nothing_to_serve_fails_loudly(tmp_path):
    with pytest.raises(InvalidModelBundle, match="no 'spectra-classification' model"):
        registry([tmp_path]).load_all()


def test_bucket_registration_and_lazy_fetch(tmp_path, store, storage_settings):
    local, remote = tmp_path / "local", tmp_path / "remote"
    make_bundle(local, version="1")
    reg = registry([local], store, storage_settings.models_bucket)
    reg.load_all()
    # Registered after the service started: found on first request, verified, served.
    where = upload_bundle(store, storage_settings.models_bucket, ModelBundle.load(make_bundle(remote, version="7")))
    assert where.endswith("toy/7/")
    assert reg.loaded("toy").bundle.version == "1"
    assert reg.get("toy", "7").bundle.version == "7"
    assert reg.loaded("toy").bundle.version == "7"  # the newest loaded version is the default now
    with pytest.raises(AlreadyExists):
        upload_bundle(store, storage_settings.models_bucket, ModelBundle.load(remote / "toy" / "7"))


def test_a_corrupt_bundle_in_the_bucket_is_not_served(tmp_path, store, storage_settings):
    bucket = storage_settings.models_bucket
    make_bundle(tmp_path / "local")
    path = make_bundle(tmp_path / "remote", version="5")
    store.ensure_bucket(bucket)
    store.put(bucket, "toy/5/model.onnx", b"garbage")
    store.put(bucket, "toy/5/manifest.json", (path / "manifest.json").read_bytes())
    reg = registry([tmp_path / "local"], store, bucket)
    reg.load_all()  # logs and skips the bad one
    with pytest.raises(InvalidModelBundle, match="sha256"):
        reg.get("toy", "5")


def test_written_graphs_do_not_record_the_checkout_path(tmp_path):
    import onnx

    model = onnx.load_from_string(linear_softmax_onnx(4, 2))
    trace = model.graph.node[0].metadata_props.add()
    trace.key, trace.value = "pkg.torch.onnx.stack_trace", 'File "/home/someone/checkout/model.py", line 1'
    kept = model.graph.node[0].metadata_props.add()
    kept.key, kept.value = "namespace", "softmax"
    path = make_bundle(tmp_path)
    bundle_dir = path.parent / "2"
    manifest = ModelBundle.load(path).manifest
    write_bundle(bundle_dir, model.SerializeToString(), dict(manifest, version="2"))
    stored = onnx.load(bundle_dir / "model.onnx")
    assert [p.key for p in stored.graph.node[0].metadata_props] == ["namespace"]
    assert b"/home/someone" not in (bundle_dir / "model.onnx").read_bytes()
    ModelBundle.load(bundle_dir)  # and the manifest's sha256 is that of the cleaned graph


def test_concurrent_first_requests_for_a_new_model_load_it_once(tmp_path, store, storage_settings):
    from concurrent.futures import ThreadPoolExecutor

    make_bundle(tmp_path / "local", version="1")
    reg = registry([tmp_path / "local"], store, storage_settings.models_bucket)
    reg.load_all()
    remote = make_bundle(tmp_path / "remote", version="9")
    upload_bundle(store, storage_settings.models_bucket, ModelBundle.load(remote))
    loads = []
    load = reg._load
    reg._load = lambda path: loads.append(path) or load(path)  # count the loads, nothing else changes
    with ThreadPoolExecutor(8) as pool:
        models = list(pool.map(lambda _: reg.get("toy", "9"), range(16)))
    assert len({id(m) for m in models}) == 1 and models[0].bundle.version == "9"
    assert len(loads) == 1


def test_code_hash_follows_every_file_and_the_extra(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    base = code_sha256(a, b, extra="lib 1.0")
    assert base == code_sha256(a, b, extra="lib 1.0")
    assert code_sha256(a, b, extra="lib 1.1") != base
    assert code_sha256(b, a, extra="lib 1.0") != base
    b.write_text("y = 3\n")
    assert code_sha256(a, b, extra="lib 1.0") != base


def test_only_the_newest_version_of_each_model_is_warmed_at_start(tmp_path, store, storage_settings):
    bucket = storage_settings.models_bucket
    make_bundle(tmp_path / "local", version="2", seed=2)
    make_bundle(tmp_path / "local", version="10", seed=10)
    upload_bundle(store, bucket, ModelBundle.load(make_bundle(tmp_path / "remote", version="3", seed=3)))
    reg = registry([tmp_path / "local"], store, bucket, cache_dir=tmp_path / "cache")
    reg.load_all()
    assert [(m.bundle.name, m.bundle.version) for m in reg.models] == [("toy", "10")]
    assert [m.version for m in reg.infos()] == ["2", "3", "10"]  # listed, loaded or not
    assert not (tmp_path / "cache" / "toy" / "3").exists()  # the older graph is not even fetched
    assert reg.get("toy", "3").bundle.version == "3"  # first request: fetched, verified, warmed
    assert reg.get("toy", "2").bundle.version == "2"
    assert reg.get().bundle.version == "10"  # and the default did not move to what loaded last
    assert reg.loaded("toy").bundle.version == "10"


def test_a_newer_version_registered_later_is_warmed_and_becomes_the_default(tmp_path, store, storage_settings):
    bucket = storage_settings.models_bucket
    make_bundle(tmp_path / "local", version="1")
    reg = registry([tmp_path / "local"], store, bucket)
    reg.load_all()
    upload_bundle(store, bucket, ModelBundle.load(make_bundle(tmp_path / "remote", version="4", seed=4)))
    upload_bundle(store, bucket, ModelBundle.load(make_bundle(tmp_path / "remote", version="3", seed=3)))
    reg.refresh()  # what ListModels does
    assert reg.is_loaded("toy", "4") and not reg.is_loaded("toy", "3")
    assert reg.loaded("toy").bundle.version == "4"


def test_a_corrupt_newest_bundle_leaves_the_default_on_the_newest_good_one(tmp_path, store, storage_settings):
    bucket = storage_settings.models_bucket
    make_bundle(tmp_path / "local", version="1")
    path = make_bundle(tmp_path / "remote", version="5")
    store.ensure_bucket(bucket)
    store.put(bucket, "toy/5/model.onnx", b"garbage")
    store.put(bucket, "toy/5/manifest.json", (path / "manifest.json").read_bytes())
    reg = registry([tmp_path / "local"], store, bucket)
    reg.load_all()
    assert reg.get().bundle.version == "1"
    assert [m.version for m in reg.infos()] == ["1"]
    reg.refresh()  # not fetched again on every look
    assert [m.version for m in reg.infos()] == ["1"]
