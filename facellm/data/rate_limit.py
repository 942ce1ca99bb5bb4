"""Staying inside an endpoint's limits: request and token ceilings, Retry-After, and backoff with jitter."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time

MAX_WAIT_S = 600.0


def backoff_delay(retry: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with jitter: half of the doubled delay is fixed, half random, so many clients
    that failed together do not come back together."""
    ceiling = min(cap, base * 2 ** max(0, retry - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after_seconds(headers) -> float | None:
    """The wait an HTTP response asks for: `retry-after-ms`, `retry-after` in seconds, or as an HTTP date."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return min(MAX_WAIT_S, max(0.0, float(value) / scale))
        except ValueError:
            pass
        parsed = email.utils.parsedate_to_datetime(value) if name == "retry-after" else None
        if parsed is not None:
            return min(MAX_WAIT_S, max(0.0, parsed.timestamp() - time.time()))
    return None


class RateLimiter:
    """Requests-per-minute and tokens-per-minute ceilings, and a shared pause after a 429.

    Requests are spaced evenly (60/rpm apart) rather than sent in bursts; tokens come from a bucket that
    holds one minute's worth and refills continuously. Waiters are served in arrival order."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.rpm = rpm
        self.tpm = tpm
        self._lock = asyncio.Lock()
        self._next_slot = 0.0
        self._tokens = float(tpm or 0)
        self._refilled = time.monotonic()
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Hold every new request for SECONDS (an endpoint said it is overloaded)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, tokens: int = 0) -> None:
        async with self._lock:
            while (wait := self._paused_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if self.rpm:
                now = time.monotonic()
                slot = max(now, self._next_slot)
                self._next_slot = slot + 60.0 / self.rpm
                if slot > now:
                    await asyncio.sleep(slot - now)
            if self.tpm:
                tokens = min(tokens, self.tpm)  # a request bigger than the ceiling still goes, alone
                while True:
                    now = time.monotonic()
                    self._tokens = min(self.tpm, self._tokens + (now - self._refilled) * self.tpm / 60.0)
                    self._refilled = now
                    if self._tokens >= tokens:
                        self._tokens -= tokens
                        break
                    await asyncio.sleep((tokens - self._tokens) * 60.0 / self.tpm)
