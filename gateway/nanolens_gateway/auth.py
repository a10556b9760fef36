"""Who may do what at the gateway: scoped bearer tokens, checked on every call, and an audit line
per call.

Callers send ``authorization: Bearer <token>``. The gateway knows tokens only by their SHA-256
(``NANOLENS_GATEWAY_TOKENS``: a JSON list from a Secret, see :func:`parse_tokens`); each names
the actions it allows and the object prefixes it reaches, and may expire. A call without a known,
unexpired token is UNAUTHENTICATED; an action or an object outside its scope is
PERMISSION_DENIED. With no tokens configured the gateway runs open (the local stack), which is
logged as a warning. Health checks and reflection stay open so that probes and generic clients
find their way.

Scopes are ``"<bucket>/<folder>"`` of inputs, e.g. ``"raw/tem-01/"``: a folder and what is below
it, on ``/`` boundaries (``raw/labA`` reaches ``raw/labA/...`` and ``raw/labA`` itself, never
``raw/labAB/...``). Results live under
``<results bucket>/<input bucket>/<input key>/...``, so a scope over inputs also reaches their
results. Every call is written to the ``nanolens.audit`` log: the caller's token name, the
method, the objects it touched and the outcome; never a token.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import grpc

from nanolens_runtime.errors import NanoLensError, PermissionDenied, Unauthenticated

log = logging.getLogger("nanolens.auth")
audit_log = logging.getLogger("nanolens.audit")
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
GATEWAY_SERVICE = "/nanolens.gateway.v1.Gateway/"

ACTIONS = ("read", "upload", "analyse", "submit")
# What each core gateway method needs; None: any valid token. The domains' own RPCs add theirs
# (nanolens_gateway.domains.DomainRpc). A method missing from both is refused to every token
# (fail closed): a new RPC must say what it needs.
CORE_METHOD_ACTIONS: dict[str, str | None] = {
    "Upload": "upload", "CreateUploadUrl": "upload",
    "Analyze": "analyse", "AnalyzeStream": "analyse", "AnalyzeMany": "analyse",
    "Download": "read", "ListModels": None,
    "SubmitJob": "submit", "CancelJob": "submit", "RetryJob": "submit",
    "GetJob": "read", "WatchJob": "read", "ListJobs": "read",
}


def method_actions() -> dict[str, str | None]:
    """What every gateway method needs: the core's and the registered domains' RPCs."""
    from nanolens_gateway.domains import domain_rpcs  # the registry imports the adapters, which import this

    return {**CORE_METHOD_ACTIONS, **{name: rpc.action for name, rpc in domain_rpcs().items()}}


@dataclass(frozen=True)
class Token:
    """A caller's grant: its name (for the audit log), what it may do, where, and until when."""

    name: str
    sha256: bytes
    actions: frozenset[str]
    scopes: tuple[str, ...] = ()  # "<bucket>/<prefix>"; empty: every object
    expires: float | None = None  # Unix time

    def covers(self, path: str) -> bool:
        return not self.scopes or any(path == scope or path.startswith(scope.rstrip("/") + "/")
                                      for scope in self.scopes)


@dataclass
class Caller:
    """The authenticated caller of the current call, and what the call touched (for the audit line)."""

    token: Token | None  # None: the gateway runs open
    results_bucket: str
    objects: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.token.name if self.token else "anonymous"

    def require(self, action: str, bucket: str, key: str) -> None:
        """Refuse (PERMISSION_DENIED) unless the token allows ``action`` on ``bucket/key``.

        Results are addressed by their input: ``<results bucket>/<input bucket>/<input key>/...``
        is in scope when ``<input bucket>/<input key>`` is.
        """
        path = key if bucket == self.results_bucket else f"{bucket}/{key}"
        self.objects.append(f"{bucket}/{key}")
        if self.token is None:
            return
        if action not in self.token.actions:
            raise PermissionDenied(f"token {self.token.name!r} may not {action} (it allows "
                                   f"{', '.join(sorted(self.token.actions)) or 'nothing'})")
        if not self.token.covers(path):
            raise PermissionDenied(f"token {self.token.name!r} may not {action} s3://{bucket}/{key}: "
                                   f"outside its scopes {list(self.token.scopes)}")

    def may(self, action: str, bucket: str, key: str) -> bool:
        """Whether :meth:`require` would let the caller ``action`` ``bucket/key`` (no audit entry)."""
        if self.token is None:
            return True
        path = key if bucket == self.results_bucket else f"{bucket}/{key}"
        return action in self.token.actions and self.token.covers(path)

    def upload_prefix(self, bucket: str) -> str:
        """Where this caller's uploads without a key go: its first scope in ``bucket`` (or the
        bucket's root for an unscoped caller)."""
        if self.token is None or not self.token.scopes:
            return ""
        for scope in self.token.scopes:
            if scope.startswith(f"{bucket}/"):
                folder = scope.removeprefix(f"{bucket}/")
                return folder.rstrip("/") + "/" if folder else ""
        raise PermissionDenied(f"token {self.token.name!r} has no scope in the upload bucket {bucket!r} "
                               f"(scopes {list(self.token.scopes)})")


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("nanolens_caller", default=None)


def caller() -> Caller:
    """The caller of the call being served (an open, anonymous caller outside any call)."""
    return _caller.get() or Caller(None, "")


def _timestamp(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"token {name!r}: expires {value!r} is not an ISO 8601 time") from None


def parse_tokens(raw: str) -> tuple[Token, ...]:
    """The token table from ``NANOLENS_GATEWAY_TOKENS``.

    Parameters
    ----------
    raw : str
        A JSON list of ``{"name", "sha256", "actions", "scopes", "expires"}`` objects: ``sha256``
        the hex SHA-256 of the token (``nanolens token create`` makes both), ``actions`` from
        :data:`ACTIONS`, ``scopes`` optional ``"<bucket>/<prefix>"`` strings, ``expires`` an
        optional ISO 8601 time. Empty: no tokens (the gateway runs open).

    Returns
    -------
    tuple of Token

    Raises
    ------
    ValueError
        Naming the entry and the field that is wrong; a gateway with a broken table does not start.
    """
    if not raw.strip():
        return ()
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"NANOLENS_GATEWAY_TOKENS is not JSON ({exc.msg} at character {exc.pos}); it holds a "
                         "list of {name, sha256, actions, scopes, expires} entries") from None
    if not isinstance(entries, list):
        raise ValueError("NANOLENS_GATEWAY_TOKENS must be a JSON list of token entries")
    tokens, names, digests = [], set(), set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"token entry {i} is not an object")
        unknown = set(entry) - {"name", "sha256", "actions", "scopes", "expires"}
        name = str(entry.get("name") or "")
        if unknown or not name:
            raise ValueError(f"token entry {i}: " + (f"unknown fields {sorted(unknown)}" if unknown else "no name"))
        digest = str(entry.get("sha256", ""))
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"token {name!r}: sha256 must be 64 lower-case hex digits (the token's SHA-256)")
        actions = entry.get("actions", [])
        if not isinstance(actions, list) or not actions or set(actions) - set(ACTIONS):
            raise ValueError(f"token {name!r}: actions must be a non-empty list of {list(ACTIONS)}, got {actions!r}")
        scopes = entry.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) and "/" in s and ".." not in s for s in scopes):
            raise ValueError(f"token {name!r}: scopes must be '<bucket>/<prefix>' strings, got {scopes!r}")
        if name in names or digest in digests:
            raise ValueError(f"token {name!r} is listed twice (by name or by sha256)")
        names.add(name)
        digests.add(digest)
        tokens.append(Token(name, bytes.fromhex(digest), frozenset(actions), tuple(scopes),
                            _timestamp(entry.get("expires"), name)))
    return tuple(tokens)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    def __init__(self, tokens: tuple[Token, ...]):
        self.tokens = tokens

    def authenticate(self, presented: str, now: float | None = None) -> Token:
        """The token whose SHA-256 matches, compared in constant time against every entry."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for token in self.tokens:  # no early exit: the time taken says nothing about which matched
            if hmac.compare_digest(digest, token.sha256):
                found = token
        if found is None:
            raise Unauthenticated("missing or unknown bearer token (metadata 'authorization: Bearer <token>')")
        if found.expires is not None and (time.time() if now is None else now) >= found.expires:
            raise Unauthenticated(f"token {found.name!r} expired at "
                                  f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(found.expires))}")
        return found

    def from_metadata(self, metadata) -> Token:
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, presented = str(value).partition(" ")
                if scheme.lower() == "bearer" and presented:
                    return self.authenticate(presented.strip())
        raise Unauthenticated("missing or unknown bearer token (metadata 'authorization: Bearer <token>')")


def _code_of(exc: BaseException, context) -> str:
    if isinstance(exc, NanoLensError):
        return exc.code.name
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    code = context.code() if hasattr(context, "code") else None
    return code.name if isinstance(code, grpc.StatusCode) else "INTERNAL"


class GatewayAuth(grpc.aio.ServerInterceptor):
    """Authenticates every gateway call, checks the method's action, makes the caller available to
    the servicer (:func:`caller`) for the object checks, and writes the audit line."""

    def __init__(self, tokens: tuple[Token, ...], results_bucket: str):
        self.table = TokenTable(tokens) if tokens else None
        self.results_bucket = results_bucket
        self.actions = method_actions()

    def _admit(self, method: str, metadata) -> Caller:
        if self.table is None:
            return Caller(None, self.results_bucket)
        token = self.table.from_metadata(metadata)
        name = method.rsplit("/", 1)[-1]
        if not method.startswith(GATEWAY_SERVICE) or name not in self.actions:
            raise PermissionDenied(f"{method} is not open to tokens (no action is defined for it)")
        action = self.actions[name]
        if action is not None and action not in token.actions:
            raise PermissionDenied(f"token {token.name!r} may not {action} (it allows "
                                   f"{', '.join(sorted(token.actions))})")
        return Caller(token, self.results_bucket)

    def _audit(self, method: str, who: Caller | None, code: str, started: float) -> None:
        audit_log.info("call", extra={"caller": who.name if who else "unauthenticated", "method": method,
                                      "objects": who.objects if who else [], "code": code,
                                      "seconds": round(time.monotonic() - started, 4)})

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        admit, audit = self._admit, self._audit

        async def unary(request_or_iterator, context, behavior):
            started, who = time.monotonic(), None
            try:
                who = admit(method, metadata)
                reset = _caller.set(who)
                try:
                    response = await behavior(request_or_iterator, context)
                finally:
                    _caller.reset(reset)
            except BaseException as exc:
                audit(method, who, _code_of(exc, context), started)
                raise
            audit(method, who, "OK", started)
            return response

        async def streaming(request_or_iterator, context, behavior):
            started, who = time.monotonic(), None
            try:
                who = admit(method, metadata)
                reset = _caller.set(who)
                try:
                    async for response in behavior(request_or_iterator, context):
                        yield response
                finally:
                    _caller.reset(reset)
            except BaseException as exc:
                audit(method, who, _code_of(exc, context), started)
                raise
            audit(method, who, "OK", started)

        # Named coroutine and async-generator functions: the metrics interceptor around this one
        # tells streaming handlers by inspect.isasyncgenfunction.
        async def unary_unary(request, context):
            return await unary(request, context, handler.unary_unary)

        async def stream_unary(requests, context):
            return await unary(requests, context, handler.stream_unary)

        async def unary_stream(request, context):
            async for response in streaming(request, context, handler.unary_stream):
                yield response

        async def stream_stream(requests, context):
            async for response in streaming(requests, context, handler.stream_stream):
                yield response

        kwargs = dict(request_deserializer=handler.request_deserializer,
                      response_serializer=handler.response_serializer)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
