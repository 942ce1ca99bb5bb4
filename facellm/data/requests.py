"""What FairFaceGPT sends to a chat-completions endpoint and how it judges what comes back.

Shared by the live (`openai`) and the Batch API (`batch`) backends, so both ask the same question the same
way and accept the same answers. A job is one image with the aspects still to answer: one aspect per
request in `per-question` mode (the released, faithful way), all of them at once in `per-image` mode, where
the image is sent once and the answers come back as one JSON object.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from facellm.common.ledger import DONE, FAILED
from facellm.data.fairface import FaceRecord
from facellm.data.prompts import Aspect, PromptSet

MODES = ("per-question", "per-image")
IMAGE_TOKENS_ESTIMATE = 255  # gpt-4o, one 512-px tile: what a 224-px FairFace crop costs


@dataclass(frozen=True)
class Job:
    face: FaceRecord
    aspects: tuple[Aspect, ...]


@dataclass(frozen=True)
class Settings:
    model: str
    mode: str
    max_tokens: int
    temperature: float | None = None


@dataclass
class Answer:
    """The verdict on one aspect of one completion: an answer, or the reason it is not acceptable."""

    aspect: Aspect
    text: str | None
    reason: str | None
    finish_reason: str | None
    usage: dict = field(default_factory=dict)


class BadImage(Exception):
    pass


@lru_cache(maxsize=64)  # per-question mode sends each image 8 times in a row
def image_data_url(path: Path) -> str:
    """The image as a base64 JPEG data URL; JPEG files go as they are, other formats are re-encoded."""
    if not path.is_file():
        raise BadImage("missing image")
    try:
        with Image.open(path) as image:
            image.load()
            if image.format == "JPEG":
                payload = path.read_bytes()
            else:
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="JPEG", quality=95)
                payload = buffer.getvalue()
    except Image.DecompressionBombError:
        raise BadImage(f"too many pixels to decode safely (over {Image.MAX_IMAGE_PIXELS})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"unreadable image ({error.__class__.__name__}: {str(error)[:80]})") from None
    return "data:image/jpeg;base64," + base64.b64encode(payload).decode("ascii")


def request_body(job: Job, prompts: PromptSet, settings: Settings, image_url: str) -> dict:
    if settings.mode == "per-question":
        (aspect,) = job.aspects
        text = prompts.question_text(job.face, aspect)
    else:
        text = prompts.all_questions_text(job.face, list(job.aspects))
    body = {
        "model": settings.model,
        "messages": [
            {"role": "system", "content": prompts.system},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": text},
                ],
            },
        ],
        "max_tokens": settings.max_tokens,
    }
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.mode == "per-image":
        body["response_format"] = {"type": "json_object"}
    return body


def estimated_tokens(body: dict) -> int:
    """A request's cost against a tokens-per-minute ceiling, as providers count it (prompt + max_tokens)."""
    text = sum(
        len(part.get("text", "")) if isinstance(part, dict) else len(str(part))
        for message in body["messages"]
        for part in (message["content"] if isinstance(message["content"], list) else [message["content"]])
    )
    return text // 4 + IMAGE_TOKENS_ESTIMATE + body.get("max_tokens", 0)


def _split_usage(usage: dict | None, parts: int) -> list[dict]:
    """Share a call's token usage among the items it answered, exactly (remainders go to the first)."""
    usage = usage or {}
    shares = [{} for _ in range(parts)]
    for name in ("prompt_tokens", "completion_tokens"):
        total = int(usage.get(name) or 0)
        for index in range(parts):
            shares[index][name] = total // parts + (1 if index < total % parts else 0)
    return shares


def _strip_fence(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def judge(job: Job, completion: dict, prompts: PromptSet, mode: str) -> list[Answer]:
    """One verdict per aspect of JOB from a chat completion (as a plain dict)."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content = message.get("content") or ""
    finish = choice.get("finish_reason")
    shares = _split_usage(completion.get("usage"), len(job.aspects))

    def verdicts(reason_for) -> list[Answer]:
        out = []
        for aspect, share in zip(job.aspects, shares, strict=True):
            text, reason = reason_for(aspect)
            out.append(Answer(aspect, text if reason is None else None, reason, finish, share))
        return out

    if message.get("refusal"):
        return verdicts(lambda _a: (None, "refusal"))
    if finish == "length":
        return verdicts(lambda _a: (None, "truncated (finish_reason length)"))
    if mode == "per-question":
        return verdicts(lambda _a: _check(content, prompts))
    try:
        answers = json.loads(_strip_fence(content))
    except json.JSONDecodeError:
        answers = None
    if not isinstance(answers, dict):
        if not content.strip():
            return verdicts(lambda _a: (None, "empty answer"))
        if prompts.is_refusal(content):
            return verdicts(lambda _a: (None, "refusal"))
        return verdicts(lambda _a: (None, "malformed JSON answer"))
    return verdicts(lambda a: _check(answers.get(a.key), prompts))


def _check(text: object, prompts: PromptSet) -> tuple[str | None, str | None]:
    if not isinstance(text, str) or not text.strip():
        return None, "empty answer"
    if prompts.is_refusal(text):
        return None, "refusal"
    return text.strip(), None


# The ledger's record of one answered (or failed) item: FairFaceGPT's schema, shared by every backend.
def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def ledger_entry(job: Job, answer: Answer, settings: Settings, backend: str, **extra) -> dict:
    return {
        "image": job.face.file,
        "aspect": answer.aspect.key,
        "status": DONE if answer.reason is None else FAILED,
        "question": answer.aspect.question,
        "answer": answer.text,
        "reason": answer.reason,
        "model": settings.model,
        "mode": settings.mode,
        "backend": backend,
        "usage": answer.usage,
        "finish_reason": answer.finish_reason,
        **extra,
        "time": now_iso(),
    }


def failure_entries(job: Job, reason: str, settings: Settings, backend: str, **extra) -> list[dict]:
    return [
        ledger_entry(job, Answer(aspect, None, reason, None, {}), settings, backend, **extra)
        for aspect in job.aspects
    ]
