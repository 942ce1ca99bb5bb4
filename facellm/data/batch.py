"""The Batch API backend of FairFaceGPT: the same requests as the live backend, sent as JSONL files that the
provider works through within 24 hours at half price.

Every step leaves a trace in OUT/batch/state.json before the next one starts, so a run killed at any point
resumes where it was: a request file is written, then uploaded (file id saved), then a batch is created
(batch id saved; on resume an existing batch for the same file is adopted rather than paid for twice), then
polled, then its output is downloaded (kept next to the state) and merged into the ledger. Items whose
answer is refused, empty or truncated go into a new batch, up to `max_attempts` rounds.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import openai
from tqdm import tqdm

from facellm.common.cli import FaceLLMError
from facellm.common.files import read_json, write_json_atomic, write_text_atomic
from facellm.data.fairface import FaceRecord
from facellm.data.live import (
    RemoteBackend,
    judge_response,
    transient_reason,
)
from facellm.data.rate_limit import backoff_delay, retry_after_seconds
from facellm.data.requests import BadImage, Job, failure_entries, image_data_url, ledger_entry, request_body

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
SEPARATOR = "|"  # custom_id = IMAGE|aspect,aspect


def custom_id(job: Job) -> str:
    return f"{job.face.file}{SEPARATOR}{','.join(a.key for a in job.aspects)}"


@dataclass(kw_only=True)
class BatchBackend(RemoteBackend):
    name: ClassVar[str] = "batch"
    folder: Path  # request files, downloaded results and state.json
    poll_interval: float
    max_requests: int
    max_bytes: int
    faces: dict[str, FaceRecord] = field(default_factory=dict, init=False)
    bad_images: set[str] = field(default_factory=set, init=False)

    @property
    def state_path(self) -> Path:
        return self.folder / "state.json"

    # -- state -------------------------------------------------------------------------------------------
    def _load_state(self) -> dict:
        if not self.state_path.is_file():
            return {"batches": []}
        state = read_json(self.state_path)
        if not isinstance(state, dict) or not isinstance(state.get("batches"), list):
            raise FaceLLMError(
                f"{self.state_path}: not a batch state file; move it away to start the batches over"
            )
        return state

    def _save(self, state: dict) -> None:
        write_json_atomic(self.state_path, state)

    def _say(self, text: str) -> None:
        tqdm.write(self.redact(text), file=sys.stderr)

    # -- run ---------------------------------------------------------------------------------------------
    async def run(self, jobs: list[Job], faces: list[FaceRecord]) -> None:
        """JOBS are the items to answer; FACES, the whole split, resolve answers of batches sent by an
        earlier run, even one with a larger --limit."""
        self.faces = {face.file: face for face in faces}
        state = self._load_state()
        for batch in state["batches"]:
            if not batch["merged"]:
                self._say(f"resuming {batch['input']} (round {batch['round'] + 1})")
                await self._complete(batch, state)
        first_round = max((b["round"] + 1 for b in state["batches"]), default=0)
        for round_ in range(first_round, first_round + self.max_attempts):
            remaining = self._remaining(jobs)
            if not remaining:
                return
            for batch in self._write_requests(remaining, round_, state):
                await self._complete(batch, state)

    def _remaining(self, jobs: list[Job]) -> list[Job]:
        remaining = []
        for job in jobs:
            aspects = tuple(a for a in job.aspects if not self.ledger.is_done(job.face.file, a.key))
            if aspects:
                remaining.append(Job(job.face, aspects))
        return remaining

    def _write_requests(self, jobs: list[Job], round_: int, state: dict) -> list[dict]:
        """Request files of at most max_requests lines and max_bytes bytes; bad images fail here, unsent."""
        chunks: list[list[str]] = [[]]
        size = 0
        for job in jobs:
            try:
                image_url = image_data_url(self.image_root / job.face.file)
            except BadImage as error:
                if job.face.file not in self.bad_images:  # recorded once, not again every round
                    self.bad_images.add(job.face.file)
                    for entry in failure_entries(job, str(error), self.settings, self.name, attempts=0):
                        self._record(entry)
                continue
            line = json.dumps(
                {
                    "custom_id": custom_id(job),
                    "method": "POST",
                    "url": ENDPOINT,
                    "body": request_body(job, self.prompts, self.settings, image_url),
                }
            )
            line_bytes = len(line.encode()) + 1
            if chunks[-1] and (len(chunks[-1]) >= self.max_requests or size + line_bytes > self.max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append(line)
            size += line_bytes
        batches = []
        for lines in (chunk for chunk in chunks if chunk):
            name = f"requests-r{round_}-{len(state['batches']):03d}.jsonl"
            write_text_atomic(self.folder / name, "\n".join(lines) + "\n")
            batch = {
                "input": name,
                "round": round_,
                "requests": len(lines),
                "file_id": None,
                "batch_id": None,
            }
            batch.update(status=None, merged=False)
            state["batches"].append(batch)
            batches.append(batch)
        self._save(state)
        return batches

    async def _complete(self, batch: dict, state: dict) -> None:
        try:
            await self._upload_and_create(batch, state)
            remote = await self._poll(batch, state)
            await self._merge(batch, remote, state)
        except openai.APIStatusError as error:
            raise FaceLLMError(
                f"Batch API call for {batch['input']} failed (HTTP {error.status_code}: "
                f"{self.redact(error.message)[:200]}); the state is kept in {self.state_path}: "
                "re-run to resume"
            ) from None
        except openai.APIConnectionError as error:
            raise FaceLLMError(
                f"cannot reach the Batch API ({self.redact(str(error))}); the state is kept in "
                f"{self.state_path}: re-run to resume"
            ) from None

    async def _call(self, what: str, make_call):
        """One Batch API call, retried with backoff on 429, 5xx, timeouts and dropped connections: a poll
        loop that lasts hours must not die of one bad gateway."""
        retry = 0
        while True:
            try:
                return await make_call()
            except Exception as error:
                reason = transient_reason(error)
                retry += 1
                if reason is None or retry > self.max_retries:
                    raise
                headers = getattr(getattr(error, "response", None), "headers", None)
                delay = retry_after_seconds(headers)
                delay = backoff_delay(retry) if delay is None else delay
                self._say(f"{what}: {reason}, retry {retry}/{self.max_retries} in {delay:.1f} s")
                await asyncio.sleep(delay)

    async def _upload(self, path: Path):
        with path.open("rb") as handle:
            return await self.client.files.create(file=(path.name, handle), purpose="batch")

    async def _upload_and_create(self, batch: dict, state: dict) -> None:
        if batch["file_id"] is None:
            uploaded = await self._call("upload", lambda: self._upload(self.folder / batch["input"]))
            batch["file_id"] = uploaded.id
            self._save(state)
            self._say(f"uploaded {batch['input']} ({batch['requests']} requests) as {uploaded.id}")
        if batch["batch_id"] is None:
            existing = await self._find_batch(batch["file_id"])
            created = existing or await self._call(
                "create batch",
                lambda: self.client.batches.create(
                    input_file_id=batch["file_id"],
                    endpoint=ENDPOINT,
                    completion_window="24h",
                    metadata={"source": "facellm fairfacegpt", "input": batch["input"]},
                ),
            )
            batch["batch_id"] = created.id
            self._save(state)
            self._say(f"{'adopted' if existing else 'created'} batch {created.id} for {batch['input']}")

    async def _find_batch(self, file_id: str):
        """A batch already made from FILE_ID (the run died between creating it and saving its id)."""
        try:
            page = await self._call("list batches", lambda: self.client.batches.list(limit=100))
        except openai.APIStatusError:
            return None
        return next((b for b in page.data if b.input_file_id == file_id and b.status != "cancelled"), None)

    async def _poll(self, batch: dict, state: dict):
        while True:
            remote = await self._call("poll", lambda: self.client.batches.retrieve(batch["batch_id"]))
            if remote.status != batch["status"]:
                batch["status"] = remote.status
                self._save(state)
                counts = remote.request_counts
                progress = f" ({counts.completed}/{counts.total})" if counts else ""
                self._say(f"batch {remote.id}: {remote.status}{progress}")
            if remote.status in TERMINAL:
                return remote
            await asyncio.sleep(self.poll_interval)

    async def _download(self, file_id: str | None, name: str) -> list[dict]:
        if not file_id:
            return []
        path = self.folder / name
        if not path.is_file():
            content = await self._call("download", lambda: self.client.files.content(file_id))
            write_text_atomic(path, self.redact(content.text))  # kept for inspection: never with the key
        lines = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    self._say(f"warning: {path}:{number}: not JSON, skipped (those items are retried)")
        return lines

    def _job(self, key: str) -> Job | None:
        image, _, aspects = key.rpartition(SEPARATOR)
        face = self.faces.get(image)
        try:
            return Job(face, tuple(self.prompts.aspect(k) for k in aspects.split(","))) if face else None
        except KeyError:
            return None

    async def _merge(self, batch: dict, remote, state: dict) -> None:
        stem = batch["input"].removesuffix(".jsonl").replace("requests-", "")
        outputs = await self._download(remote.output_file_id, f"output-{stem}.jsonl")
        errors = await self._download(remote.error_file_id, f"errors-{stem}.jsonl")
        tag = {"attempts": 1, "batch": remote.id}
        seen = set()
        for line in outputs + errors:
            job = self._job(str(line.get("custom_id", "")))
            if job is None:
                continue
            seen.add(custom_id(job))
            response = line.get("response") or {}
            try:
                answers = judge_response(job, response.get("body"), self.prompts, self.settings.mode)
            except ValueError as error:
                error_info = line.get("error") or {}
                detail = error_info.get("message") if isinstance(error_info, dict) else None
                reason = f"batch line failed: {detail or response.get('status_code') or error}"
                for entry in failure_entries(job, reason, self.settings, self.name, **tag):
                    self._record(entry)
                continue
            for answer in answers:
                refusals = int(answer.reason == "refusal")
                self._record(ledger_entry(job, answer, self.settings, self.name, refusals=refusals, **tag))
        unanswered = f"batch {remote.status} without an answer for this item"
        if remote.status == "failed" and getattr(remote, "errors", None) and remote.errors.data:
            unanswered = f"batch failed: {remote.errors.data[0].message}"
        for line in (self.folder / batch["input"]).read_text(encoding="utf-8").splitlines():
            key = json.loads(line)["custom_id"]
            if key not in seen and (job := self._job(key)) is not None:
                for entry in failure_entries(job, unanswered, self.settings, self.name, **tag):
                    self._record(entry)
        self.ledger.sync()
        batch["merged"] = True
        self._save(state)
