"""Per-client request rate (docs/architecture.md §9): a token bucket per client id (or token
subject) in this process. Exhausted: 429 with ``Retry-After``."""

from __future__ import annotations

import math
import threading
import time

from ehr_service.fhir.errors import Category, FhirError, Issue


class RateLimiter:
    def __init__(self, per_minute: int, burst: int, max_clients: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Spend one request of ``client``'s allowance, or raise a 429."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise FhirError(
                    Category.BUSY,
                    (Issue(f"Too many requests from this client; retry in {wait} s", "throttled"),),
                    headers={"Retry-After": str(wait)},
                )
            if len(self._buckets) >= self.max_clients and client not in self._buckets:
                self._buckets.clear()  # bounded memory: forget idle clients
            self._buckets[client] = (tokens - 1.0, now)
