"""A client of the NanoLens gateway for instrument software and scripts.

    from nanolens_client import Client

    with Client() as client:                      # NANOLENS_GATEWAY, NANOLENS_TOKEN, ...
        result = client.analyse("particles.tif", "particle_sizes", pixel_size_nm=0.5)
        print(result.quantity("distribution.gmd_nm"), result.verdict)

Depends on grpcio and protobuf only (numpy only for callers that pass arrays). The guide is
docs/client.md in the NanoLens repository.
"""

from nanolens_client.aio import AsyncClient
from nanolens_client.calls import analysis_names
from nanolens_client.client import Client
from nanolens_client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from nanolens_client.results import (
    Artefact,
    Item,
    ItemResult,
    Job,
    JobItem,
    JobResults,
    Provenance,
    Quantity,
    Ref,
    Result,
    Upload,
    UploadProgress,
    Verdict,
)
from nanolens_client.retry import RetryPolicy
from nanolens_client.settings import ClientSettings

__all__ = ["AlreadyExists", "Artefact", "AsyncClient", "Client", "ClientSettings", "DeadlineExceeded",
           "FailedPrecondition", "GatewayError", "InvalidArgument", "Item", "ItemResult", "Job", "JobItem",
           "JobResults", "NotFound", "PermissionDenied", "Provenance", "Quantity", "Ref", "ResourceExhausted",
           "Result", "RetryPolicy", "Unauthenticated", "Unavailable", "Upload", "UploadProgress", "Verdict",
           "analysis_names"]
