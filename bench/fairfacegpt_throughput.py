"""FairFaceGPT request throughput against a local OpenAI-compatible endpoint with a fixed latency L.

For concurrency C in 1, 8, 64 it runs the live backend (the real `openai` client over HTTP, the ledger
writes included) on enough synthetic FairFace images for about `--waves` rounds of C requests, and reports
  - throughput / (C / L): how close it gets to the bound set by the endpoint's latency;
  - throughput / released-style loop: one request at a time plus a 1 s sleep, as the released generator.
All figures come from one run of this script.

    uv run python bench/fairfacegpt_throughput.py [--latency 0.5] [--waves 20]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from facellm.common.ledger import Ledger
from facellm.data.fairface import load_split
from facellm.data.generate import Config, _jobs, _settings
from facellm.data.prompts import load_prompts
from facellm.data.remote import run_remote
from facellm.data.requests import Job, image_data_url, request_body

SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "fairface-sample"
IMAGES = "fairface-img-margin025-trainval"


def synthetic_fairface(root: Path, images: int) -> Path:
    """IMAGES distinct files (copies of the sample faces) with a labels CSV, in the FairFace layout."""
    rows = list(csv.DictReader((SAMPLE / "fairface_label_val.csv").open()))
    (root / IMAGES / "val").mkdir(parents=True)
    with (root / "fairface_label_val.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for index in range(images):
            row = dict(rows[index % len(rows)])
            shutil.copy(SAMPLE / IMAGES / row["file"], root / IMAGES / f"val/{index + 1}.jpg")
            writer.writerow({**row, "file": f"val/{index + 1}.jpg"})
    return root


class Endpoint:
    """The local endpoint in its own process, so that serving does not compete with the client for the GIL."""

    def __init__(self, latency: float):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "facellm.testing.local_endpoint",
                "--port",
                str(port),
                "--latency",
                str(latency),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.process.stdout.readline()  # "serving on ..." once it listens

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait()


def run_concurrent(endpoint: Endpoint, root: Path, out: Path, concurrency: int, items: int) -> float:
    """Items per second of the live backend at CONCURRENCY over ITEMS questions."""
    config = Config(fairface_root=root, out=out, base_url=endpoint.base_url, concurrency=concurrency)
    prompts, settings = load_prompts(), _settings(config)
    image_root, faces = load_split(root, "val")
    with Ledger(out / "ledger.jsonl") as ledger:
        jobs = _jobs(faces, prompts, settings, ledger)[:items]
        start = time.perf_counter()
        asyncio.run(run_remote(config, jobs, prompts, settings, ledger, image_root, lambda entry: None))
        elapsed = time.perf_counter() - start
        assert sum(1 for e in ledger.entries.values() if e["status"] == "done") == len(jobs)
    return len(jobs) / elapsed


def run_released_style(endpoint: Endpoint, root: Path, calls: int) -> float:
    """The released generator's loop: one synchronous call at a time, then sleep 1 s."""
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=os.environ["OPENAI_API_KEY"])
    prompts = load_prompts()
    settings = _settings(Config(fairface_root=root, out=root))
    _, faces = load_split(root, "val")
    start = time.perf_counter()
    for index in range(calls):
        face = faces[index // len(prompts.aspects)]
        job = Job(face, (prompts.aspects[index % len(prompts.aspects)],))
        body = request_body(job, prompts, settings, image_data_url(root / IMAGES / face.file))
        client.chat.completions.create(**body)
        time.sleep(1.0)
    return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the endpoint takes per request")
    parser.add_argument("--waves", type=int, default=20, help="rounds of C requests per measurement")
    parser.add_argument("--released-calls", type=int, default=4, help="calls of the released-style loop")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "bench-local-endpoint")
    levels = (1, 8, 64)
    items = {c: c * args.waves for c in levels}
    results = {"latency_s": args.latency, "waves": args.waves, "cpu_count": os.cpu_count(), "levels": []}
    with tempfile.TemporaryDirectory() as tmp, Endpoint(args.latency) as endpoint:
        root = synthetic_fairface(Path(tmp) / "fairface", images=-(-max(items.values()) // 8))
        released = run_released_style(endpoint, root, args.released_calls)
        results["released_style_qa_per_s"] = round(released, 4)
        print(f"endpoint latency L = {args.latency} s; released-style loop: {released:.3f} QA/s")
        print(f"{'C':>4} {'items':>6} {'QA/s':>9} {'bound C/L':>10} {'of bound':>9} {'x released':>11}")
        for concurrency in levels:
            rate = run_concurrent(
                endpoint, root, Path(tmp) / f"out-c{concurrency}", concurrency, items[concurrency]
            )
            bound = concurrency / args.latency
            row = {
                "concurrency": concurrency,
                "items": items[concurrency],
                "qa_per_s": round(rate, 3),
                "bound_qa_per_s": bound,
                "fraction_of_bound": round(rate / bound, 3),
                "speedup_vs_released": round(rate / released, 1),
            }
            results["levels"].append(row)
            print(
                f"{concurrency:>4} {items[concurrency]:>6} {rate:>9.2f} {bound:>10.1f} "
                f"{rate / bound:>9.3f} {rate / released:>10.1f}x"
            )
    top = results["levels"][-1]
    verdict = top["fraction_of_bound"] >= 0.90 and top["speedup_vs_released"] >= 50
    print(f"targets at C=64 (>= 0.90 of bound, >= 50x released): {'met' if verdict else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
