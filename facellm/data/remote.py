"""Asking an OpenAI-compatible endpoint FairFaceGPT's pending jobs: live requests (facellm.data.live) or the
Batch API (facellm.data.batch), with one client, one preflight and the key redacted from what comes back."""

from __future__ import annotations

import sys

import openai
from tqdm import tqdm

from facellm.data.batch import BatchBackend
from facellm.data.credentials import api_key
from facellm.data.live import OpenAIBackend, Redactor, preflight
from facellm.data.prompts import PromptSet
from facellm.data.rate_limit import RateLimiter
from facellm.data.requests import Job, Settings


async def run_remote(
    config,
    jobs: list[Job],
    prompts: PromptSet,
    settings: Settings,
    ledger,
    image_root,
    on_item,
    all_faces: list | None = None,
):
    """Ask JOBS at the endpoint of CONFIG (a generate.Config): live requests, or the Batch API; the live
    backend's counters, or None."""
    key = api_key()
    redact = Redactor(key)
    client = openai.AsyncOpenAI(api_key=key, base_url=config.base_url, max_retries=0, timeout=config.timeout)
    try:
        await preflight(client, settings.model, redact, lambda text: tqdm.write(text, file=sys.stderr))
        shared = dict(
            client=client, prompts=prompts, settings=settings, ledger=ledger, image_root=image_root,
            redact=redact, max_attempts=config.max_attempts, max_retries=config.max_retries, on_item=on_item,
        )  # fmt: skip
        if config.backend == "batch":
            backend = BatchBackend(
                **shared, folder=config.out / "batch", poll_interval=config.poll_interval,
                max_requests=config.batch_max_requests, max_bytes=config.batch_max_bytes,
            )  # fmt: skip
            await backend.run(jobs, all_faces if all_faces is not None else [job.face for job in jobs])
        else:
            backend = OpenAIBackend(
                **shared, limiter=RateLimiter(config.rpm, config.tpm), timeout=config.timeout
            )
            return await backend.run(jobs, config.concurrency)
    finally:
        await client.close()
