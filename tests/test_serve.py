"""serve.sh: LLaMA-Factory's OpenAI-compatible API on an exported model, queried with the openai client."""

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import openai

from tests.conftest import REPO, SAMPLE_FACES, assert_one_line_error, run_command

FACE = SAMPLE_FACES / "fairface-img-margin025-trainval" / "val" / "1.jpg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_api_answers_an_openai_client_with_a_base64_image(trained_tiny, tmp_path):
    merged = trained_tiny[1]
    port = free_port()
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        ["bash", "serve.sh", "--model", str(merged), "--port", str(port), "--name", "FaceLLM-tiny"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        assert [m.id for m in client.models.list().data] == ["FaceLLM-tiny"]
        image = base64.b64encode(FACE.read_bytes()).decode()
        reply = client.chat.completions.create(
            model="FaceLLM-tiny",
            max_tokens=12,
            temperature=0,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
                        {"type": "text", "text": "Describe this face in detail."},
                    ],
                }
            ],
        )
        assert reply.choices[0].message.content.strip()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    # uvicorn itself reports where it listens: loopback only by default
    assert f"Uvicorn running on http://127.0.0.1:{port}" in (tmp_path / "serve.log").read_text()


def test_serve_refuses_an_adapter_folder(trained_tiny):
    result = run_command("bash", "serve.sh", "--model", str(trained_tiny[0]))
    assert_one_line_error(result, "a LoRA adapter", "export.sh")
