"""serve.sh: LLaMA-Factory's OpenAI-compatible API on an exported model, queried with the openai client."""

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.support import REPO, SAMPLE_FACES, assert_one_line_error, command_env, run_command

FACE = SAMPLE_FACES / "fairface-img-margin025-trainval" / "val" / "1.jpg"
KEY = "test-key-7f3a9c"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def face_request(url: str, text: str = "Describe this face in detail.") -> dict:
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
    }


def post_chat(port: int, image_url: str) -> int:
    """POST one chat completion carrying `image_url`, with the key; the HTTP status."""
    body = {"model": "FaceLLM-tiny", "max_tokens": 4, "messages": [face_request(image_url)]}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_api_answers_an_openai_client_with_a_base64_image(trained_tiny, tmp_path):
    """Off loopback with API_KEY: requests without the key get 401, with it an answer; multi-MB base64
    images, decodable or not, add little to the log (LLaMA-Factory would log each request whole)."""
    merged = trained_tiny[1]
    port = free_port()
    log_path, shown_path = tmp_path / "serve.log", tmp_path / "shown.txt"
    shown = shown_path.open("w")
    server = subprocess.Popen(
        ["bash", "serve.sh", "--model", str(merged), "--host", "0.0.0.0", "--port", str(port),
         "--name", "FaceLLM-tiny", "--log", str(log_path)],
        cwd=REPO, env={**command_env(), "API_KEY": KEY}, stdout=shown, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                pytest.fail("GET /v1/models answered without the API key")
            except urllib.error.HTTPError as error:
                assert error.code == 401
                break
            except OSError:
                assert server.poll() is None, log_path.read_text()[-3000:]
                time.sleep(1)
        deadline = time.monotonic() + 10
        while "ready" not in shown_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["FaceLLM-tiny"]
        image = base64.b64encode(FACE.read_bytes()).decode()
        reply = client.chat.completions.create(
            model="FaceLLM-tiny",
            max_tokens=12,
            temperature=0,
            messages=[face_request(f"data:image/jpeg;base64,{image}")],
        )
        assert reply.choices[0].message.content.strip()
        # ~8 MB each: a valid JPEG with trailing padding, base64 that does not decode, bytes that are no image
        log_before = log_path.stat().st_size
        padded = base64.b64encode(FACE.read_bytes() + bytes(6_000_000)).decode()
        assert post_chat(port, f"data:image/jpeg;base64,{padded}") == 200
        assert post_chat(port, "data:image/jpeg;base64," + "A" * 8_000_001) != 200
        assert (
            post_chat(port, "data:image/png;base64," + base64.b64encode(os.urandom(6_000_000)).decode())
            != 200
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    text = log_path.read_text()
    assert log_path.stat().st_size - log_before < 100_000, text[-3000:]
    assert f"Uvicorn running on http://0.0.0.0:{port}" in text
    assert KEY not in text
    # the terminal shows what happens, not the server's hundreds of lines (they are all in the log)
    assert shown_path.read_text().splitlines() == [
        "warning: binding 0.0.0.0 exposes the model beyond this machine; requests must carry API_KEY as "
        "their bearer key",
        f"serve: loading {merged} (full log: {log_path}; --verbose shows it)",
        f"serve: ready at http://0.0.0.0:{port}/v1 (model name FaceLLM-tiny); Ctrl-C stops it",
    ]


@pytest.fixture
def stub_cli(tmp_path) -> tuple[dict, Path, Path]:
    """(environment, model folder, marker): a `llamafactory-cli` first on PATH that writes the settings
    serve.sh gives it to `marker` instead of loading a model, and a folder serve.sh takes for a model."""
    bin_dir, model, marker = tmp_path / "bin", tmp_path / "model", tmp_path / "started.json"
    bin_dir.mkdir()
    model.mkdir()
    (model / "config.json").write_text("{}")
    stub = bin_dir / "llamafactory-cli"
    stub.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], **{{k: os.environ.get(k) for k in ('API_HOST', 'API_PORT', "
        f"'API_VERBOSE')}}, 'has_key': bool(os.environ.get('API_KEY'))}}, open({str(marker)!r}, 'w'))\n"
    )
    stub.chmod(0o755)
    env = command_env()
    env.pop("API_KEY", None)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env, model, marker


def run_serve(env: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(
        ["bash", "serve.sh", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, time.monotonic() - start


def assert_refused_fast(result: subprocess.CompletedProcess, seconds: float, marker: Path, *needles: str):
    assert_one_line_error(result, *needles)
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert seconds < 2, seconds
    assert not marker.exists(), "the server was started"


def test_serve_refuses_a_network_host_without_an_api_key(stub_cli):
    env, model, marker = stub_cli
    result, seconds = run_serve(env, "--model", str(model), "--host", "0.0.0.0", "--port", str(free_port()))
    assert_refused_fast(result, seconds, marker, "API_KEY=", "--host 0.0.0.0", "bearer")
    # an empty key is no key
    result, seconds = run_serve({**env, "API_KEY": ""}, "--model", str(model), "--host", "192.168.0.10")
    assert_refused_fast(result, seconds, marker, "API_KEY=")


@pytest.mark.parametrize("port", ["99999", "65536", "0"])
def test_serve_refuses_a_port_out_of_range_before_loading_the_model(stub_cli, port):
    env, model, marker = stub_cli
    result, seconds = run_serve(env, "--model", str(model), "--port", port)
    assert_refused_fast(result, seconds, marker, f"--port {port}", "1-65535")


def test_serve_refuses_a_busy_port_before_loading_the_model(stub_cli):
    env, model, marker = stub_cli
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result, seconds = run_serve(env, "--model", str(model), "--port", str(port))
    assert_refused_fast(result, seconds, marker, f"port {port}", "in use")


def test_serve_binds_loopback_by_default_and_a_network_host_with_a_key(stub_cli):
    env, model, marker = stub_cli
    port, log = free_port(), str(model.parent / "serve.log")
    result, _ = run_serve(env, "--model", str(model), "--port", str(port), "--log", log)
    assert result.returncode == 0, result.stderr
    started = json.loads(marker.read_text())
    # loopback, and LLaMA-Factory's dump of every request (base64 images included) off
    assert (started["API_HOST"], started["API_PORT"], started["API_VERBOSE"]) == ("127.0.0.1", str(port), "0")
    assert started["argv"][0] == "api"

    marker.unlink()
    result, _ = run_serve(
        {**env, "API_KEY": KEY}, "--model", str(model), "--host", "0.0.0.0", "--port", str(port), "--log", log
    )
    assert result.returncode == 0, result.stderr
    started = json.loads(marker.read_text())
    assert (started["API_HOST"], started["has_key"]) == ("0.0.0.0", True)
    assert KEY not in result.stdout + result.stderr


def test_serve_refuses_an_adapter_folder(trained_tiny):
    result = run_command("bash", "serve.sh", "--model", str(trained_tiny[0]))
    assert_one_line_error(result, "a LoRA adapter", "export.sh")
