"""Ranged reads of one object by a presigned URL: how a domain service reads a large input where it
is computed, instead of receiving it through the gateway. The gateway checks the caller's access and
signs a short-lived GET URL; the service holds no storage credentials for it, and reads only from
its own object storage endpoint (a URL elsewhere is refused: the service fetches nothing a caller
names)."""

from __future__ import annotations

from urllib.parse import urlsplit

import urllib3

from nanolens_runtime.errors import FailedPrecondition, InvalidArgument, Unavailable

_HTTP = urllib3.PoolManager(
    timeout=urllib3.Timeout(connect=5, read=120), maxsize=8,
    retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))


class RangedObject:
    """``url``: a presigned GET URL on ``endpoint`` (host:port, NANOLENS_S3_ENDPOINT), over TLS when
    ``secure``; ``field`` names it in refusals."""

    def __init__(self, url: str, endpoint: str, secure: bool, field: str):
        parts = urlsplit(url)
        scheme = "https" if secure else "http"
        if not endpoint or parts.scheme != scheme or parts.netloc != endpoint:
            raise InvalidArgument(f"{field} must be a {scheme}:// URL on this service's object storage "
                                  f"({endpoint or 'none configured: NANOLENS_S3_ENDPOINT'}), got "
                                  f"{parts.scheme}://{parts.netloc}", field=field)
        self.url = url
        self.where = parts.path

    def read(self, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (blocking: run it in a thread)."""
        try:
            response = _HTTP.request("GET", self.url, headers={"Range": f"bytes={start}-{start + length - 1}"})
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(f"object storage unreachable for {self.where}: {type(exc).__name__}") from exc
        if response.status in (401, 403):
            raise FailedPrecondition(f"object storage refused the URL of {self.where} ({response.status}): "
                                     "it expired, or was not signed for it")
        if response.status == 404:
            raise FailedPrecondition(f"{self.where} is no longer in object storage")
        if response.status == 416 or (response.status == 206 and len(response.data) != length):
            raise InvalidArgument(f"{self.where} ends before byte {start + length} its header promises",
                                  field="input")
        if response.status != 206:
            raise Unavailable(f"object storage answered {response.status} to a ranged GET of {self.where}")
        return response.data
