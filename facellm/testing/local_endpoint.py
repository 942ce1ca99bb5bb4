"""A local OpenAI-compatible endpoint on 127.0.0.1 for dry runs, tests and benchmarks.

It speaks the parts of the OpenAI HTTP API that FairFaceGPT uses: `GET /v1/models`,
`POST /v1/chat/completions` (plain and JSON mode), and the Batch API (`POST /v1/files`,
`GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches/{id}`). Answers are deterministic and
say what the request contained (the image's sha256, the labels of the hint, the question), so a caller can
check that every answer belongs to its image; the hint's instructions are never repeated. Faults are
scripted: each name in `faults` is consumed by one chat request, in arrival order.

    python -m facellm.testing.local_endpoint --latency 0.5     # then --base-url http://127.0.0.1:8001/v1
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import threading
import time
from collections import deque
from http.server import ThreadingHTTPServer

from facellm.common.cli import FaceLLMError, run_cli
from facellm.data.prompts import RACE_PHRASES
from facellm.testing.endpoint_http import Handler

FAULTS = (
    "429",
    "500",
    "503",
    "drop",
    "timeout",
    "malformed",
    "badshape",
    "length",
    "empty",
    "refusal",
    "400",
    "401",
    "echo-key",  # a hostile endpoint: the answer quotes the caller's API key
)
REFUSAL = "I'm sorry, but I can't help with that request."
JSON_QUESTION = re.compile(r'^"(\w+)": (.+)$', re.MULTILINE)

# The label values as the prompt templates write them into a hint (FairFace's, data/prompts/, and the other
# sources', data/prompts/<source>/), whatever the template around them says.
RACES = (*RACE_PHRASES.values(), "Asian", "other than White, Black, Asian or Indian")  # FairFace's, UTKFace's
LABEL_PATTERNS = {
    "seen as": re.compile(r"\ban? (?:young-looking )?(?:baby |teenage )?(?:boy|girl|man|woman)\b"),
    "perceived gender": re.compile(r"\b(?:female|male)\b"),
    "race group": re.compile(r"\b(?:" + "|".join(map(re.escape, RACES)) + r")\b"),
    "age": re.compile(r"\b(?:\d+-\d+|over \d+|\d+) years? old\b|\bunder one year old\b"),
    "accessories": re.compile(r"(?<=accessories: )[^;]+"),
    "face shows": re.compile(r"(?<=the face shows )[\w ]+?(?=[;.])"),
    "valence": re.compile(r"(?<=valence )[-+]\d\.\d\d"),
}
DEFAULT_PORT = 8001  # next to serve.sh's 8000, not on it


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 stalls 64 simultaneous connects


def image_digests(messages: list[dict]) -> list[str]:
    digests = []
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                url = part["image_url"]["url"]
                payload = url.split(",", 1)[1] if url.startswith("data:") else url
                digests.append(hashlib.sha256(base64.b64decode(payload)).hexdigest())
    return digests


def described_labels(hint: str) -> str:
    """The labels that HINT (the first paragraph of the user text) gives, in the endpoint's own words.
    The hint is never echoed: its instructions ("do not mention that you were given an annotation") would
    read as leaked labels in a dataset made from these answers, and users train on dry-run data too."""
    found = {name: pattern.search(hint) for name, pattern in LABEL_PATTERNS.items()}
    said = [
        match.group(0) if name == "seen as" else f"{name} {match.group(0)}"
        for name, match in found.items()
        if match
    ]
    return f"Seen: {', '.join(said)}." if said else "No labels given."


def user_text(messages: list[dict]) -> str:
    texts = []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(part.get("text", "") for part in content if part.get("type") == "text")
    return "\n".join(texts)


class LocalEndpoint:
    def __init__(
        self,
        latency: float = 0.0,
        faults: list[str] | tuple[str, ...] = (),
        api_key: str | None = None,
        model: str = "gpt-4o-2024-11-20",
        retry_after: str = "1",
        hang_s: float = 30.0,
        refuse_images: set[str] | None = None,
        batch_faults: list[str] | tuple[str, ...] = (),
        port: int = 0,
    ):
        unknown = [f for f in faults if f is not None and f not in FAULTS]  # None: a request answered well
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {FAULTS}")
        self.latency = latency
        self.faults = deque(faults)
        self.api_key = api_key
        self.model = model
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.refuse_images = refuse_images or set()
        self.batch_faults = deque(batch_faults)
        self.batch_hold = False  # keep batches in_progress until released
        self.poll_faults: deque[str] = deque()  # "429" or "503", consumed by batch status requests
        self.log: list[dict] = []  # one entry per request: time, path, fault
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.endpoint = self
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> LocalEndpoint:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def chat_requests(self) -> list[dict]:
        with self._lock:
            return [entry for entry in self.log if entry["path"].endswith("/chat/completions")]

    # -- behaviour ---------------------------------------------------------------------------------------
    def next_fault(self) -> str | None:
        with self._lock:
            return self.faults.popleft() if self.faults else None

    def completion(self, body: dict, fault: str | None = None) -> dict:
        """The chat completion this endpoint answers to BODY (FAULT among length/empty/refusal)."""
        messages = body.get("messages", [])
        digests = image_digests(messages)
        text = user_text(messages)
        tag = f"image {digests[0][:16]}" if digests else "no image"
        seen = described_labels(text.split("\n\n", 1)[0])
        json_mode = (body.get("response_format") or {}).get("type") == "json_object"
        if fault == "refusal" or (digests and digests[0] in self.refuse_images):
            content = REFUSAL
        elif fault == "empty":
            content = ""
        elif json_mode:
            answers = {key: f"{tag}. {seen} Answer to: {q.strip()}" for key, q in JSON_QUESTION.findall(text)}
            content = json.dumps(answers)
        else:
            content = f"{tag}. {seen} Answer to: {text.rsplit(chr(10), 1)[-1].strip()}"
        if fault == "echo-key":
            content = f"{content} (your key is {self.api_key})"
        finish = "stop"
        if fault == "length":
            content, finish = content[: max(1, len(content) // 2)], "length"
        prompt_tokens = (len(json.dumps([m.get("role") for m in messages])) + len(text)) // 4 + 255 * len(
            digests
        )
        prompt_tokens += sum(len(m["content"]) // 4 for m in messages if isinstance(m.get("content"), str))
        return {
            "id": f"chatcmpl-{hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(content) // 4 + 1,
                "total_tokens": prompt_tokens + len(content) // 4 + 1,
            },
        }

    def run_batch(self, batch: dict) -> None:
        lines = self.files[batch["input_file_id"]]["content"].decode().splitlines()
        output, errors = [], []
        for line in lines:
            request = json.loads(line)
            with self._lock:
                fault = self.batch_faults.popleft() if self.batch_faults else None
            if fault == "error":
                errors.append(
                    {
                        "id": f"req_{len(errors)}",
                        "custom_id": request["custom_id"],
                        "response": None,
                        "error": {"code": "server_error", "message": f"the line failed (key {self.api_key})"},
                    }
                )
                continue
            output.append(
                {
                    "id": f"req_{len(output)}",
                    "custom_id": request["custom_id"],
                    "response": {"status_code": 200, "body": self.completion(request["body"], fault)},
                    "error": None,
                }
            )
        batch["output_file_id"] = self.add_file(output, "batch_output")["id"] if output else None
        batch["error_file_id"] = self.add_file(errors, "batch_error")["id"] if errors else None
        batch["request_counts"] = {"total": len(lines), "completed": len(output), "failed": len(errors)}
        batch["status"] = "completed"

    def add_file(self, content: bytes | list[dict], purpose: str, filename: str = "") -> dict:
        if isinstance(content, list):
            content = "".join(json.dumps(line) + "\n" for line in content).encode()
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            record = {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": filename or f"{file_id}.jsonl",
                "purpose": purpose,
                "status": "processed",
            }
            self.files[file_id] = {**record, "content": content}
        return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facellm.testing.local_endpoint",
        description="Serve a deterministic OpenAI-compatible endpoint on 127.0.0.1 (for dry runs of "
        "fairfacegpt.py without a paid API).",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT,
        help="(default: %(default)s; serve.sh takes 8000, so both can run at once)",
    )  # fmt: skip
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat request")
    parser.add_argument("--model", default="gpt-4o-2024-11-20", help="model id listed by /v1/models")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        raise FaceLLMError(f"--port {args.port} is out of range (1-65535)")
    try:
        endpoint = LocalEndpoint(latency=args.latency, model=args.model, port=args.port)
    except OSError as error:  # the usual one: the port is taken (serve.sh's 8000, or another dry run)
        raise FaceLLMError(
            f"cannot listen on 127.0.0.1 port {args.port}: {error.strerror or error}; pass another --port "
            "and use it in --base-url"
        ) from None
    print(f"serving on {endpoint.base_url} (Ctrl-C to stop)", flush=True)
    try:
        endpoint._server.serve_forever()
    except KeyboardInterrupt:
        endpoint._server.server_close()


if __name__ == "__main__":
    run_cli(main)
