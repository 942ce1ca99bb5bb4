"""The live backend of FairFaceGPT: many chat-completion requests in flight over one `openai.AsyncOpenAI`
client, inside the endpoint's limits, each finished item written to the ledger as soon as it is known.

Transport trouble (429, 5xx, timeouts, dropped connections, unparseable responses) is retried with backoff,
honouring Retry-After; answers that are empty, refused or truncated are asked again up to `max_attempts`;
an endpoint that rejects the key or does not know the model stops the run at once (nothing is lost: the
ledger keeps every finished item).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import openai

from facellm.common.cli import FaceLLMError
from facellm.common.ledger import DONE, FAILED, Ledger
from facellm.data.prompts import PromptSet
from facellm.data.rate_limit import RateLimiter, backoff_delay, retry_after_seconds
from facellm.data.requests import (
    Answer,
    BadImage,
    Job,
    Settings,
    estimated_tokens,
    failure_entries,
    image_data_url,
    judge,
    ledger_entry,
    request_body,
)

FATAL_STATUSES = {
    401: "rejected the API key",
    403: "refused access",
    404: "does not know this model or route",
}


class Redactor:
    """Removes the API key from any text before it is written or printed."""

    def __init__(self, secret: str | None):
        self.secret = secret if secret and len(secret) >= 4 else None

    def __call__(self, text: str) -> str:
        return text.replace(self.secret, "[redacted]") if self.secret else text


def carry_forward(entry: dict, previous: dict | None) -> dict:
    """An item asked again in a later run or batch round: its earlier, failed attempts were sent and paid
    for too, so the ledger's last line for it counts them all."""
    if previous and previous.get("status") == FAILED:
        entry["attempts"] = entry.get("attempts", 0) + previous.get("attempts", 0)
        entry["refusals"] = entry.get("refusals", 0) + previous.get("refusals", 0)
        before = previous.get("usage") or {}
        entry["usage"] = {
            name: (entry.get("usage") or {}).get(name, 0) + before.get(name, 0)
            for name in ("prompt_tokens", "completion_tokens")
        }
    return entry


def judge_response(job: Job, completion: object, prompts: PromptSet, mode: str) -> list[Answer]:
    """The verdicts on a response body; a body of the wrong shape is a malformed response (retried)."""
    if not isinstance(completion, dict) or not completion.get("choices"):
        raise ValueError("response without choices")
    try:
        return judge(job, completion, prompts, mode)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"unexpected response shape ({error.__class__.__name__})") from None


def transient_reason(error: Exception) -> str | None:
    """Why an API call failed in a way worth retrying, or None when it is not a transport problem."""
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection error"
    if isinstance(error, openai.APIStatusError) and (
        error.status_code >= 500 or error.status_code in (408, 409, 429)
    ):
        return f"HTTP {error.status_code}"
    if isinstance(error, openai.APIResponseValidationError | json.JSONDecodeError | ValueError):
        return "malformed response"
    return None


@dataclass
class Counters:
    requests: int = 0  # sent, retries included
    retries: int = 0  # transport retries (429, 5xx, timeouts, ...)


@dataclass(kw_only=True)
class RemoteBackend:
    """What the live and the batch backends share: the endpoint, what to ask, and where answers go."""

    client: openai.AsyncOpenAI
    prompts: PromptSet
    settings: Settings
    ledger: Ledger
    image_root: Path
    redact: Redactor
    max_attempts: int  # answers an item may get before it is recorded as failed
    max_retries: int  # transport retries per request
    on_item: Callable[[dict], None] = lambda entry: None

    def _record(self, entry: dict) -> None:
        """Append one finished item to the ledger, without the key, counting earlier failed attempts."""
        if entry["reason"]:
            entry["reason"] = self.redact(entry["reason"])[:300]
        if entry["answer"]:  # a hostile endpoint may quote the key back inside an answer
            entry["answer"] = self.redact(entry["answer"])
        previous = self.ledger.get(entry["image"], entry["aspect"])
        if previous and (
            previous["status"] == DONE or previous.get("batch") == entry.get("batch") is not None
        ):
            return  # done is final; the same batch merged again after a crash adds nothing
        self.ledger.append(carry_forward(entry, previous))
        self.on_item(entry)


@dataclass(kw_only=True)
class OpenAIBackend(RemoteBackend):
    name: ClassVar[str] = "openai"
    limiter: RateLimiter
    timeout: float
    counters: Counters = field(default_factory=Counters, init=False)

    async def run(self, jobs: list[Job], concurrency: int) -> Counters:
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        workers = [
            asyncio.create_task(self._worker(queue)) for _ in range(max(1, min(concurrency, len(jobs))))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return self.counters

    async def _worker(self, queue: asyncio.Queue[Job]) -> None:
        while not queue.empty():
            await self._process(queue.get_nowait())

    async def _process(self, job: Job) -> None:
        try:
            image_url = image_data_url(self.image_root / job.face.file)
        except BadImage as error:
            for entry in failure_entries(
                job, str(error), self.settings, self.name, attempts=0, latency_s=0.0
            ):
                self._record(entry)
            return
        sent = answered = retries = 0
        spent: dict[str, dict] = {a.key: {"prompt_tokens": 0, "completion_tokens": 0} for a in job.aspects}
        refused: dict[str, int] = {a.key: 0 for a in job.aspects}
        started = time.monotonic()

        def give_up(reason: str) -> None:
            elapsed = round(time.monotonic() - started, 3)
            for entry in failure_entries(
                job, reason, self.settings, self.name, attempts=sent, latency_s=elapsed
            ):
                entry["usage"], entry["refusals"] = spent[entry["aspect"]], refused[entry["aspect"]]
                self._record(entry)

        while job.aspects:
            body = request_body(job, self.prompts, self.settings, image_url)
            await self.limiter.acquire(estimated_tokens(body))
            sent += 1
            self.counters.requests += 1
            try:
                # The client's generic POST: the same auth, HTTP stack and typed errors as
                # chat.completions.create, without re-walking the request into typed dicts and the response
                # into pydantic models, which costs more CPU than the HTTP itself at high concurrency.
                completion = await self.client.post(
                    "/chat/completions", cast_to=object, body=body, options={"timeout": self.timeout}
                )
                answers = judge_response(job, completion, self.prompts, self.settings.mode)
            except Exception as error:
                self._stop_if_fatal(error)
                reason = transient_reason(error)
                if (
                    reason is None
                ):  # the endpoint refused this very request (400, 422, ...): asking again won't help
                    give_up(f"rejected by the endpoint: {getattr(error, 'message', None) or error}")
                    return
                retries += 1
                self.counters.retries += 1
                if retries > self.max_retries:
                    give_up(f"{reason} ({retries} times)")
                    return
                headers = getattr(getattr(error, "response", None), "headers", None)
                delay = retry_after_seconds(headers)
                if delay is not None and getattr(error, "status_code", None) == 429:
                    self.limiter.pause(delay)  # the whole client backs off, not just this request
                await asyncio.sleep(delay if delay is not None else backoff_delay(retries))
                continue
            answered += 1
            latency = round(time.monotonic() - started, 3)
            still_pending = []
            for answer in answers:
                key = answer.aspect.key
                for name, value in answer.usage.items():
                    spent[key][name] += value
                answer.usage = spent[key]
                refused[key] += answer.reason == "refusal"
                if answer.reason is None or answered >= self.max_attempts:
                    entry = ledger_entry(
                        job,
                        answer,
                        self.settings,
                        self.name,
                        attempts=sent,
                        refusals=refused[key],
                        latency_s=latency,
                    )
                    self._record(entry)
                else:
                    still_pending.append(answer.aspect)
            job = Job(job.face, tuple(still_pending))

    def _stop_if_fatal(self, error: Exception) -> None:
        status = getattr(error, "status_code", None)
        if status in FATAL_STATUSES:
            message = self.redact(getattr(error, "message", "") or str(error))[:200]
            raise FaceLLMError(
                f"the endpoint {self.client.base_url} {FATAL_STATUSES[status]} (HTTP {status}: {message}); "
                "finished items are kept in the ledger, re-run to resume"
            )


async def preflight(
    client: openai.AsyncOpenAI, model: str, redact: Redactor, warn: Callable[[str], None]
) -> None:
    """Fail in one line before any work when the endpoint is unreachable or rejects the key."""
    try:
        listing = await client.models.list(timeout=20)
    except openai.APIConnectionError as error:
        raise FaceLLMError(f"cannot reach --base-url {client.base_url}: {redact(str(error))}") from None
    except openai.APIStatusError as error:
        if error.status_code in (401, 403):
            raise FaceLLMError(
                f"the endpoint {client.base_url} {FATAL_STATUSES[error.status_code]} "
                f"(HTTP {error.status_code}); check OPENAI_API_KEY"
            ) from None
        return  # some OpenAI-compatible servers do not list models; the first request will tell
    except Exception as error:  # a web page, a proxy: anything but the API
        raise FaceLLMError(
            f"--base-url {client.base_url} does not answer like an OpenAI-compatible API "
            f"(GET models: {error.__class__.__name__}); such URLs usually end in /v1"
        ) from None
    try:
        ids = [item.id for item in listing.data]
    except (AttributeError, TypeError):
        raise FaceLLMError(
            f"--base-url {client.base_url} does not answer like an OpenAI-compatible API "
            "(GET models returned no model list); such URLs usually end in /v1"
        ) from None
    if ids and model not in ids:
        shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        warn(f"warning: {client.base_url} does not list model {model!r} (it lists {shown})")
