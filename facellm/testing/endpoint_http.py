"""The HTTP side of the local OpenAI-compatible endpoint: routes, scripted faults, multipart uploads."""

from __future__ import annotations

import contextlib
import json
import re
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler


class Handler(BaseHTTPRequestHandler):
    """One request to the LocalEndpoint that serves it (`self.server.endpoint`)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    @property
    def endpoint(self):
        """The LocalEndpoint (facellm.testing.local_endpoint) whose server took this request."""
        return self.server.endpoint

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, payload: object, headers: dict | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "error", "code": status}}, headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorised(self) -> bool:
        given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if self.endpoint.api_key is None or given == self.endpoint.api_key:
            return True
        # Real endpoints echo part of a wrong key; echo all of it so leaks are easy to catch.
        self._error(401, f"Incorrect API key provided: {given}")
        return False

    def do_GET(self) -> None:
        with self.endpoint._lock:
            self.endpoint.log.append({"time": time.monotonic(), "path": self.path, "fault": None})
        if not self._authorised():
            return
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": self.endpoint.model, "object": "model"}]})
        elif match := re.search(r"/files/([\w-]+)/content$", self.path):
            record = self.endpoint.files.get(match.group(1))
            if record is None:
                self._error(404, "no such file")
            else:
                self._send(200, record["content"])
        elif re.search(r"/batches/?(\?.*)?$", self.path):
            data = sorted(self.endpoint.batches.values(), key=lambda b: b["id"], reverse=True)
            self._send(200, {"object": "list", "data": data, "has_more": False})
        elif match := re.search(r"/batches/([\w-]+)$", self.path):
            self._poll_batch(match.group(1))
        else:
            self._error(404, f"no route {self.path}")

    def _poll_batch(self, batch_id: str) -> None:
        with self.endpoint._lock:
            fault = self.endpoint.poll_faults.popleft() if self.endpoint.poll_faults else None
        if fault:
            self._error(int(fault), "try again later", {"Retry-After": "0"})
            return
        batch = self.endpoint.batches.get(batch_id)
        if batch is None:
            self._error(404, "no such batch")
            return
        if batch["status"] == "validating":
            batch["status"] = "in_progress"
        elif batch["status"] == "in_progress" and not self.endpoint.batch_hold:
            self.endpoint.run_batch(batch)
        self._send(200, batch)

    def do_POST(self) -> None:
        body = self._body()
        fault = self.endpoint.next_fault() if self.path.endswith("/chat/completions") else None
        with self.endpoint._lock:
            self.endpoint.log.append({"time": time.monotonic(), "path": self.path, "fault": fault})
        if not self._authorised():
            return
        if self.path.endswith("/chat/completions"):
            self._chat(body, fault)
        elif self.path.endswith("/files"):
            self._upload(body)
        elif self.path.endswith("/batches"):
            request = json.loads(body)
            if request.get("input_file_id") not in self.endpoint.files:
                self._error(400, "unknown input_file_id")
                return
            with self.endpoint._lock:
                batch_id = f"batch_{len(self.endpoint.batches) + 1}"
                batch = {
                    "id": batch_id,
                    "object": "batch",
                    "endpoint": request.get("endpoint"),
                    "input_file_id": request["input_file_id"],
                    "completion_window": request.get("completion_window", "24h"),
                    "status": "validating",
                    "created_at": int(time.time()),
                    "output_file_id": None,
                    "error_file_id": None,
                }
                self.endpoint.batches[batch_id] = batch
            self._send(200, batch)
        else:
            self._error(404, f"no route {self.path}")

    def _upload(self, body: bytes) -> None:
        head = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        if "file" not in fields:
            self._error(400, "multipart upload without a 'file' field")
            return
        purpose = fields["purpose"].get_content().strip() if "purpose" in fields else "batch"
        content = fields["file"].get_payload(decode=True)
        self._send(200, self.endpoint.add_file(content, purpose, fields["file"].get_filename() or ""))

    def _chat(self, raw: bytes, fault: str | None) -> None:
        if self.endpoint.latency:
            time.sleep(self.endpoint.latency)
        if fault == "drop":
            self.close_connection = True
            return
        if fault == "timeout":
            time.sleep(self.endpoint.hang_s)
            self.close_connection = True
            return
        if fault == "429":
            self._error(429, "Rate limit reached", {"Retry-After": self.endpoint.retry_after})
            return
        if fault in ("500", "503"):
            self._error(int(fault), "The server had an error")
            return
        if fault == "401":
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            self._error(401, f"Incorrect API key provided: {given}")
            return
        if fault == "400":  # rejects the request, echoing the key as careless servers do
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            self._error(400, f"Invalid image in request signed with {given}")
            return
        if fault == "badshape":  # valid JSON, but not a chat completion
            self._send(200, {"choices": ["unexpected"], "usage": {"prompt_tokens": "many"}})
            return
        if fault == "malformed":
            self._send(200, b'{"id": "chatcmpl-x", "choices": [{"message": ')
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._error(400, "request body is not JSON")
            return
        self._send(200, self.endpoint.completion(body, fault))
