"""AnalyzeMany at a real gateway: items inline and by reference in one call, each answered once with
its id; a bad item answered with its own error while the rest succeed; inline bytes stored as
uploads (so a repeat is served from storage) and within the caller's scope."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json

import grpc
import numpy as np
import pytest

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_gateway.auth import token_digest
from nanolens_spectra.synthetic.swcnt import generate_spectra

pytestmark = pytest.mark.slow
SPECTRA = gateway_pb2.ANALYSIS_KIND_SPECTRA
INLINE_KB = 16
TOKENS = {"admin": "token-of-admin", "lab-a": "token-of-lab-a", "lab-b": "token-of-lab-b",
          "analyst": "token-of-analyst", "elsewhere": "token-of-elsewhere"}
TABLE = [
    {"name": "admin", "sha256": token_digest(TOKENS["admin"]), "actions": ["read", "upload", "analyse"]},
    {"name": "lab-a", "sha256": token_digest(TOKENS["lab-a"]), "actions": ["read", "upload", "analyse"],
     "scopes": ["raw/lab-a/"]},
    {"name": "lab-b", "sha256": token_digest(TOKENS["lab-b"]), "actions": ["read", "upload", "analyse"],
     "scopes": ["raw/lab-b/"]},
    {"name": "analyst", "sha256": token_digest(TOKENS["analyst"]), "actions": ["read", "analyse"]},
    {"name": "elsewhere", "sha256": token_digest(TOKENS["elsewhere"]), "actions": ["read", "upload", "analyse"],
     "scopes": ["shared/elsewhere/"]},  # upload rights, but no folder in the raw bucket
]


@pytest.fixture(scope="module")
def gateway(start_stack):
    _, endpoints = start_stack("many", domains=("spectra",), extra_env={
        "NANOLENS_GATEWAY_TOKENS": json.dumps(TABLE), "NANOLENS_MAX_INLINE_KB": str(INLINE_KB)})
    with grpc.insecure_channel(endpoints.gateway) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array.astype(np.float32))
    return out.getvalue()


@pytest.fixture(scope="module")
def spectra() -> list[bytes]:
    """Eight distinct one-spectrum files (seeded), a few KiB each."""
    return [npy(s[None, :]) for s in generate_spectra(n_per_class=4, seed=41).spectra[:8]]


def inline(item_id: str, data: bytes, filename: str = "spectrum.npy", kind: int = SPECTRA):
    return gateway_pb2.AnalyzeManyRequest(id=item_id, request=gateway_pb2.AnalyzeRequest(analysis=kind),
                                          inline=gateway_pb2.InlineItem(filename=filename, data=data))


def named(item_id: str, ref: common_pb2.ObjectRef, kind: int = SPECTRA):
    return gateway_pb2.AnalyzeManyRequest(id=item_id, request=gateway_pb2.AnalyzeRequest(input=ref, analysis=kind))


def many(gateway, items, who: str = "admin") -> dict[str, gateway_pb2.AnalyzeManyResponse]:
    """Every answer by id; an id answered twice fails the test."""
    answers: dict[str, gateway_pb2.AnalyzeManyResponse] = {}
    for answer in gateway.AnalyzeMany(iter(items), timeout=300,
                                      metadata=(("authorization", f"Bearer {TOKENS[who]}"),)):
        assert answer.id not in answers, f"{answer.id} answered twice"
        answers[answer.id] = answer
    return answers


def upload(gateway, data: bytes, filename: str, who: str = "admin") -> common_pb2.ObjectRef:
    messages = [gateway_pb2.UploadRequest(header=gateway_pb2.UploadHeader(filename=filename)),
                gateway_pb2.UploadRequest(chunk=data)]
    return gateway.Upload(iter(messages), timeout=60,
                          metadata=(("authorization", f"Bearer {TOKENS[who]}"),)).object


def download(gateway, ref: common_pb2.ObjectRef) -> bytes:
    return b"".join(r.chunk for r in gateway.Download(gateway_pb2.DownloadRequest(object=ref), timeout=60,
                                                      metadata=(("authorization", f"Bearer {TOKENS['admin']}"),)))


def test_inline_and_named_items_are_each_answered_once_and_a_repeat_is_served_from_storage(gateway, spectra):
    refs = [upload(gateway, npy(np.vstack([np.load(io.BytesIO(s)) for s in spectra[:3]])), "three.npy"),
            upload(gateway, spectra[7], "one.npy")]
    items = [inline(f"inline-{i}", data) for i, data in enumerate(spectra[:6])]
    items += [named("named-three", refs[0]), named("named-one", refs[1])]
    answers = many(gateway, items)
    assert set(answers) == {m.id for m in items}
    for item in items:
        answer = answers[item.id]
        assert answer.WhichOneof("outcome") == "result", answer.error
        doc = json.loads(answer.result.result_json)
        assert doc["n_spectra"] == (3 if item.id == "named-three" else 1)
        if item.HasField("inline"):  # stored as Upload without a key stores it: named by its content
            assert doc["input"]["bucket"] == "raw" and doc["input"]["key"].startswith("uploads/")
            assert doc["input"]["key"].endswith("/spectrum.npy")
    inline_keys = {json.loads(answers[f"inline-{i}"].result.result_json)["input"]["key"] for i in range(6)}
    assert len(inline_keys) == 6  # six contents, six objects
    # analysed from the bytes in hand, but stored first: the input the result names holds exactly them
    doc = json.loads(answers["inline-0"].result.result_json)
    assert download(gateway, common_pb2.ObjectRef(**{k: doc["input"][k] for k in ("bucket", "key", "version_id")})) \
        == spectra[0]
    assert f"/{hashlib.sha256(spectra[0]).hexdigest()[:32]}/" in doc["input"]["key"]  # named by its sha256
    for answer in answers.values():  # every artefact a result lists is stored, with the bytes it describes
        names = {a.name for a in answer.result.artifacts}
        assert names == {"probabilities.npy", "ood_score.npy", "spectra.png"}
        for artefact in answer.result.artifacts:
            data = download(gateway, artefact.ref)
            assert (len(data), hashlib.sha256(data).hexdigest()) == (artefact.size_bytes, artefact.sha256)
        assert json.loads(download(gateway, answer.result.result)) == json.loads(answer.result.result_json)

    again = many(gateway, items)
    assert all(a.result.cached for a in again.values())
    assert {i: a.result.result.key for i, a in again.items()} == {i: a.result.result.key for i, a in answers.items()}
    # the same bytes uploaded are the object an inline item made: its stored result is found
    same = upload(gateway, spectra[0], "spectrum.npy")
    assert same.key == json.loads(answers["inline-0"].result.result_json)["input"]["key"]


def test_a_bad_item_gets_its_own_error_and_the_rest_succeed(gateway, spectra):
    items = [
        inline("good-1", spectra[0]),
        inline("unreadable", b"this is not an array", filename="broken.npy"),
        inline("too-big", b"\0" * (INLINE_KB * 1024 + 1)),
        inline("unknown-analysis", spectra[1], kind=999),
        inline("no-name", spectra[2], filename=""),
        named("outside-the-inputs", common_pb2.ObjectRef(bucket="results", key="x.npy")),
        gateway_pb2.AnalyzeManyRequest(id="both", request=gateway_pb2.AnalyzeRequest(
            analysis=SPECTRA, input=common_pb2.ObjectRef(key="x.npy")),
            inline=gateway_pb2.InlineItem(filename="s.npy", data=spectra[3])),
        inline("good-2", spectra[5]),
    ]
    answers = many(gateway, items)
    assert set(answers) == {m.id for m in items}
    assert json.loads(answers["good-1"].result.result_json)["n_spectra"] == 1
    assert answers["good-2"].WhichOneof("outcome") == "result"
    errors = {i: a.error for i, a in answers.items() if a.WhichOneof("outcome") == "error"}
    assert set(errors) == {"unreadable", "too-big", "unknown-analysis", "no-name", "outside-the-inputs", "both"}
    assert errors["unreadable"].code == "INVALID_ARGUMENT"
    assert errors["too-big"].code == "INVALID_ARGUMENT" and errors["too-big"].field == "inline.data"
    assert f"NANOLENS_MAX_INLINE_KB={INLINE_KB}" in errors["too-big"].message
    assert errors["unknown-analysis"].field == "request.analysis"
    assert errors["no-name"].field == "inline.filename"
    assert errors["outside-the-inputs"].field == "request.input.bucket"
    assert errors["both"].field == "inline"


def test_a_repeated_id_is_refused_without_stopping_the_call(gateway, spectra):
    answers = []
    metadata = (("authorization", f"Bearer {TOKENS['admin']}"),)
    for answer in gateway.AnalyzeMany(iter([inline("x", spectra[0]), inline("x", spectra[1])]), timeout=300,
                                      metadata=metadata):
        answers.append(answer)
    assert sorted(a.WhichOneof("outcome") for a in answers) == ["error", "result"]
    refused = next(a.error for a in answers if a.WhichOneof("outcome") == "error")
    assert refused.field == "id" and "earlier item" in refused.message


def test_inline_bytes_stay_within_the_callers_scope(gateway, spectra):
    mine = many(gateway, [inline("a", spectra[6])], who="lab-a")["a"]
    key = json.loads(mine.result.result_json)["input"]["key"]
    assert key.startswith("lab-a/uploads/")  # a scoped caller's inline items land in its own folder
    ref = common_pb2.ObjectRef(bucket="raw", key=key)

    theirs = many(gateway, [named("theirs", ref), inline("own", spectra[6])], who="lab-b")
    assert theirs["theirs"].error.code == "PERMISSION_DENIED"
    assert json.loads(theirs["own"].result.result_json)["input"]["key"].startswith("lab-b/uploads/")

    no_upload = many(gateway, [inline("pushed", spectra[5]), named("read", ref)], who="analyst")
    pushed = no_upload["pushed"].error
    assert pushed.code == "PERMISSION_DENIED" and "may not upload" in pushed.message
    assert no_upload["read"].WhichOneof("outcome") == "result"  # analysing what is stored needs no upload

    nowhere = many(gateway, [inline("pushed", spectra[4])], who="elsewhere")["pushed"]
    assert nowhere.error.code == "PERMISSION_DENIED" and "no scope in the upload bucket" in nowhere.error.message


def test_numbers_only_leaves_the_picture_out_and_is_a_result_of_its_own(gateway, spectra):
    items = [inline("picture", spectra[3]), gateway_pb2.AnalyzeManyRequest(
        id="numbers", request=gateway_pb2.AnalyzeRequest(analysis=SPECTRA, options={"numbers_only": "yes"}),
        inline=gateway_pb2.InlineItem(filename="spectrum.npy", data=spectra[3]))]
    answers = many(gateway, items)
    names = {i: {a.name for a in answers[i].result.artifacts} for i in answers}
    assert "spectra.png" in names["picture"] and "spectra.png" not in names["numbers"]
    assert "probabilities.npy" in names["numbers"]
    assert answers["numbers"].result.result.key != answers["picture"].result.result.key
    assert json.loads(answers["numbers"].result.result_json)["options"] == {"numbers_only": "true"}


@pytest.mark.timeout(120)  # a call that does not cancel its items never ends: fail, not hang
def test_cancelling_the_call_cancels_the_items_in_flight():
    """The servicer in process, its analyses held open until cancelled (a real one cannot be made to
    wait for the cancel): both items in flight are cancelled when the caller goes, none answered."""
    from nanolens_gateway.server import GatewayServicer
    from nanolens_gateway.settings import GatewaySettings

    async def body():
        servicer = GatewayServicer(GatewaySettings(), None, {})
        started, cancelled = asyncio.Queue(), []

        async def analyse(request, deadline_s=None, progress=None):
            started.put_nowait(request.input.key)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(request.input.key)
                raise

        servicer.plane.analyse = analyse

        async def requests():
            for key in ("a.npy", "b.npy"):
                yield named(key, common_pb2.ObjectRef(key=key))
            await asyncio.Event().wait()  # the caller keeps the call open

        class Context:
            def time_remaining(self):
                return None

        answers = servicer.AnalyzeMany(requests(), Context())
        waiting = asyncio.ensure_future(anext(answers))
        assert {await started.get(), await started.get()} == {"a.npy", "b.npy"}
        waiting.cancel()  # what gRPC does to the handler when the caller cancels
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return list(cancelled)  # as it was when the call ended (asyncio.run cancels what is left after)

    assert sorted(asyncio.run(body())) == ["a.npy", "b.npy"]
