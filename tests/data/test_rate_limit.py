import asyncio
import email.utils
import time

import pytest

from facellm.data.rate_limit import RateLimiter, backoff_delay, retry_after_seconds


def test_retry_after_in_milliseconds_seconds_and_as_a_date():
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 18 <= retry_after_seconds({"retry-after": date}) <= 21
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None
    assert retry_after_seconds({"retry-after": "86400"}) == 600.0  # capped


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    for retry in range(1, 10):
        ceiling = min(60.0, 2 ** (retry - 1))
        delays = [backoff_delay(retry) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len({backoff_delay(5) for _ in range(20)}) > 1


def test_rpm_spaces_requests_evenly():
    async def go():
        limiter = RateLimiter(rpm=1200)  # one every 0.05 s
        stamps = []
        for _ in range(6):
            await limiter.acquire()
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(go())
    assert stamps[-1] - stamps[0] >= 5 * 0.05 * 0.95


def test_tpm_bucket_holds_back_what_exceeds_a_minute_of_tokens():
    async def go():
        limiter = RateLimiter(tpm=6000)  # 100 tokens per second
        start = time.monotonic()
        await limiter.acquire(6000)  # the whole bucket at once
        await limiter.acquire(20)  # must wait for 20 tokens to refill: 0.2 s
        return time.monotonic() - start

    assert asyncio.run(go()) >= 0.18


def test_pause_holds_every_request():
    async def go():
        limiter = RateLimiter()
        limiter.pause(0.2)
        start = time.monotonic()
        await asyncio.gather(limiter.acquire(), limiter.acquire())
        return time.monotonic() - start

    assert asyncio.run(go()) == pytest.approx(0.2, abs=0.1)
