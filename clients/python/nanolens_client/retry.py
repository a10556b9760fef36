"""When and how long to wait before trying a call again."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from nanolens_client.errors import GatewayError


def retriable(error: GatewayError) -> bool:
    """UNAVAILABLE (a gateway restarting, draining, not reachable yet) always; RESOURCE_EXHAUSTED
    only when gRPC or a proxy raised it (too many concurrent calls). The one the gateway's own code
    raises names a limit the request exceeds (a file too large, too many job items): trying again
    cannot help."""
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and not error.from_platform


@dataclass
class RetryPolicy:
    """``attempts`` tries in all; before try n+1 a wait drawn uniformly from [b/2, b] with
    b = min(``max_backoff``, ``initial_backoff`` * 2**(n-1)) (jittered, so that clients cut off
    together do not come back together), never past the call's deadline. ``on_retry(attempt,
    error, delay)`` is told before each wait. Only idempotent calls are retried."""

    attempts: int = 5
    initial_backoff: float = 0.25
    max_backoff: float = 8.0
    on_retry: Callable[[int, GatewayError, float], None] | None = None
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self):
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")

    def delay(self, attempt: int, error: GatewayError, idempotent: bool, time_left: float) -> float | None:
        """Seconds to wait before the next try after try ``attempt`` failed with ``error``, or None
        when the error is final (not retriable, not idempotent, no tries or time left)."""
        if not idempotent or attempt >= self.attempts or not retriable(error):
            return None
        bound = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        wait = self.rng.uniform(bound / 2, bound)
        if wait >= time_left:
            return None
        if self.on_retry is not None:
            self.on_retry(attempt, error, wait)
        return wait
