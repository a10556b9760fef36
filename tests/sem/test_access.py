"""Search over a collection shared by two groups: each sees only its own images among the hits,
a read-only token searches with stored images but may not embed new ones, and a refusal outside the
scopes does not tell whether the collection holds the image. The collection is searched through its
HNSW graph (NANOLENS_SEM_INDEX_ABOVE lowered to 8): the filter holds there too."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image

from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.auth import token_digest
from nanolens_sem.synthetic.textures import generate
from wire import GatewayClient

pytestmark = pytest.mark.slow
TOKENS = {"lab-a": "sem-token-a", "lab-b": "sem-token-b", "reader": "sem-token-reader"}
TABLE = [
    {"name": "lab-a", "sha256": token_digest(TOKENS["lab-a"]), "actions": ["read", "upload", "analyse"],
     "scopes": ["raw/lab-a/"]},
    {"name": "lab-b", "sha256": token_digest(TOKENS["lab-b"]), "actions": ["read", "upload", "analyse"],
     "scopes": ["raw/lab-b/"]},
    {"name": "reader", "sha256": token_digest(TOKENS["reader"]), "actions": ["read"], "scopes": ["raw/lab-a/"]},
]


@pytest.fixture(scope="module")
def endpoints(start_stack):
    return start_stack("sem-access", extra_env={"NANOLENS_GATEWAY_TOKENS": json.dumps(TABLE),
                                                "NANOLENS_SEM_INDEX_ABOVE": "8"}, domains=("sem",))[1]


def png_file(tmp_path, seed: int):
    out = io.BytesIO()
    Image.fromarray((generate(seed, (128, 128)).image * 255).astype(np.uint8)).save(out, format="PNG")
    path = tmp_path / f"{seed}.png"
    path.write_bytes(out.getvalue())
    return path


def search(who: GatewayClient, query, k: int = 20) -> gateway_pb2.SearchCollectionResponse:
    return who.stub.SearchCollection(gateway_pb2.SearchCollectionRequest(collection="shared", query=query, k=k),
                                     timeout=60, metadata=who.metadata)


def test_each_group_finds_only_its_own_images_in_a_shared_collection(endpoints, tmp_path):
    a, b, reader = (GatewayClient(endpoints.gateway, token=TOKENS[n]) for n in ("lab-a", "lab-b", "reader"))
    mine = {}
    for who, name, seeds in ((a, "lab-a", range(0, 6)), (b, "lab-b", range(6, 12))):
        for seed in seeds:
            ref = who.upload(png_file(tmp_path, seed), timeout=60).object
            who.analyze(ref, gateway_pb2.ANALYSIS_KIND_SEM_IMAGE, options={"embed": "shared"}, timeout=120)
            mine.setdefault(name, []).append(ref)
    hits_a = search(a, mine["lab-a"][0])
    assert hits_a.n_items == 12 and hits_a.query_in_collection
    assert len(hits_a.hits) == 5 and all(h.object.key.startswith("lab-a/") for h in hits_a.hits)
    hits_b = search(b, mine["lab-b"][0])
    assert len(hits_b.hits) == 5 and all(h.object.key.startswith("lab-b/") for h in hits_b.hits)
    few = search(a, mine["lab-a"][1], k=3).hits  # fewer than the group has: the graph's nearest, filtered
    assert len(few) == 3 and all(h.object.key.startswith("lab-a/") for h in few)
    # a query of the other group's is refused, stored or not
    with pytest.raises(grpc.RpcError) as err:
        search(b, mine["lab-a"][1])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # read-only: searching with a stored image works; embedding a new one would be an analysis
    assert all(h.object.key.startswith("lab-a/") for h in search(reader, mine["lab-a"][2]).hits)
    fresh = a.upload(png_file(tmp_path, 99), timeout=60).object
    with pytest.raises(grpc.RpcError) as err:
        search(reader, fresh)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "may not analyse" in err.value.details()
    # no membership oracle: outside the scopes, a stored and a fresh image are refused alike
    refusals = []
    for ref in (mine["lab-a"][1], fresh):
        with pytest.raises(grpc.RpcError) as err:
            search(b, ref)
        refusals.append((err.value.code(), err.value.details().replace(ref.key, "KEY")))
    assert refusals[0] == refusals[1] and refusals[0][0] == grpc.StatusCode.PERMISSION_DENIED, refusals
    assert search(a, fresh).query_in_collection is False
