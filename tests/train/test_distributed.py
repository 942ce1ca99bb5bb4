"""Distributed runs on one machine: gloo on CPU, every node on 127.0.0.1, every worker on one thread.

By default the suite runs what starts no worker: node 1's launcher on its own, the Slurm example node by node
under stand-ins for srun and scontrol, the node settings and the failure messages. The runs that start
workers take about eight minutes on 2 cores, mostly imports, and are marked `distributed_full`:

    pytest -m distributed_full tests/train/test_distributed.py

one two-node training run (world size 2) against a one-process run with the same effective batch, the files
each node writes and the merge of its adapter; two processes on one node stopped by SIGTERM and resumed, a
worker killed mid-run (SIGKILL) and the run resumed, a hung node given up after ddp_timeout, nodes that
never meet, and FaceXBench sharded under torchrun with a shard killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from facellm.common.cli import run_cli
from facellm.data.generate import main as generate_main
from facellm.eval.plugin import import_file
from facellm.testing.noisy_model import noisy_copy
from facellm.testing.sample_benchmark import build as build_benchmark
from facellm.train.distributed import what_failed
from facellm.train.export import main as export_main
from facellm.train.launch import main as train_main
from facellm.train.recipes import checkpoints, llamafactory_keys
from facellm.train.report import losses
from tests.support import REPO, SAMPLE_FACES, assert_one_line_error, command_env, run_main

full = pytest.mark.distributed_full

NODE_SETTINGS = ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE")

TAG = "FACELLM_TEST_LAUNCH"  # in the environment of every process a test starts, to end them all after it
MEDIA = SAMPLE_FACES / "fairface-img-margin025-trainval"
# Measured: the two-node runs' losses equal the one-process run's to the last bit of float32 on this
# machine; the bound leaves room for another BLAS summing in another order.
LOSS_RTOL = 1e-4
STEPS = 60  # time enough to stop or kill a run between two checkpoints (10 steps a second here)
SHORT = 20  # the default run's

# Put on PYTHONPATH, this records every file a Python process opens for writing (or renames into place)
# under FACELLM_TEST_WATCH, with the process, its node and its rank: which process wrote which file.
WRITES_HOOK = """\
import os, sys, threading

_watch, _log = os.environ.get("FACELLM_TEST_WATCH"), os.environ.get("FACELLM_TEST_WRITES")
_inside = threading.local()


def _record(event, args):
    if getattr(_inside, "busy", False):
        return
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
            flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
    elif event == "os.rename":
        path, writing = args[1], True
    else:
        return
    if not writing or not isinstance(path, (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(path))
    if not path.startswith(_watch + os.sep):
        return
    _inside.busy = True
    try:
        who = f"{os.getpid()} node{os.environ.get('NODE_RANK', '0')} rank{os.environ.get('RANK', '-')}"
        fd = os.open(os.path.join(_log, f"{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(fd, f"{who}\\t{path}\\n".encode())
        os.close(fd)
    finally:
        _inside.busy = False


if _watch and _log:
    sys.addaudithook(_record)
"""


@contextmanager
def one_thread():
    """Torch on one thread in this process, as in the workers. (On two busy cores, the trainer on two
    threads ran 40 times slower.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def in_process(main, argv: list[str]) -> int:
    """MAIN(ARGV) in this process as its command runs it, on one thread; its exit code. The imports are the
    suite's."""
    with one_thread():
        try:
            run_cli(lambda: main(argv))
        except SystemExit as stop:
            return stop.code if isinstance(stop.code, int) else 1
    return 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Launch:
    """A command started in the background, its output in files."""

    def __init__(self, command, cwd: Path, env: dict, folder: Path, umask: int):
        self.out, self.err = folder / "stdout", folder / "stderr"
        folder.mkdir(parents=True)
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, umask=umask)

    def wait(self, timeout: float) -> subprocess.CompletedProcess:
        code = self.process.wait(timeout=timeout)
        out, err = self.out.read_text(), self.err.read_text()
        return subprocess.CompletedProcess(self.process.args, code, out, err)

    def workers(self) -> list[psutil.Process]:
        """torchrun's worker processes under this command (they run in sessions of their own)."""
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if "LOCAL_RANK" in child.environ():
                    found.append(child)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found


class Launches:
    """The commands one test starts. Each gets OMP_NUM_THREADS=1 and a tag in its environment that its
    every process inherits, so that all of them, orphans too, are ended with the test."""

    def __init__(self, folder: Path):
        self.folder, self.tag, self.count = folder, uuid.uuid4().hex, 0

    def start(self, command, *, cwd: Path = REPO, umask: int = 0o022, **env: str) -> Launch:
        self.count += 1
        folder = self.folder / f"launch-{self.count}"
        # temporary files in the test's folder: a launcher killed by the test cannot clean up after itself
        environment = {**command_env(), "OMP_NUM_THREADS": "1", TAG: self.tag, "TMPDIR": str(folder), **env}
        return Launch(command, cwd, environment, folder, umask)

    def end_all(self) -> None:
        for process in psutil.process_iter():
            try:
                if process.pid != os.getpid() and process.environ().get(TAG) == self.tag:
                    process.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue


@pytest.fixture
def launches(tmp_path):
    started = Launches(tmp_path / "launches")
    yield started
    started.end_all()


@pytest.fixture(scope="module")
def faces_data(tmp_path_factory) -> Path:
    """FairFaceGPT's short label answers about the 16 sample faces: 48 pairs, no endpoint."""
    out = tmp_path_factory.mktemp("faces-data")
    args = ["--fairface-root", str(SAMPLE_FACES), "--out", str(out), "--backend", "labels"]
    assert in_process(generate_main, [*args, "--items", "short", "--no-progress"]) == 0
    return out


def train_args(tiny_model: Path, data: Path, out: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return [
        "configs/tiny_cpu_lora_sft.yaml", f"model_name_or_path={tiny_model}", f"dataset_dir={data}",
        f"media_dir={MEDIA}", f"output_dir={out}", f"max_steps={steps}", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def one_process(tiny_model, faces_data, tmp_path_factory):
    """The reference of STEPS steps (by default STEPS): one process, batch 2 x accumulation 2, the effective
    batch of 2 workers x batch 2. Trained once per length."""
    runs: dict[int, Path] = {}

    def reference(steps: int = STEPS) -> Path:
        if steps not in runs:
            out = tmp_path_factory.mktemp("one-process") / "lora"
            args = train_args(tiny_model, faces_data, out, "gradient_accumulation_steps=2", steps=steps)
            assert in_process(train_main, [*args, "save_steps=1000", "--no-preflight"]) == 0
            runs[steps] = out
        return runs[steps]

    return reference


def start_nodes(launches: Launches, args: list[str], ranks=(0, 1), **env: str) -> list[Launch]:
    """`./train.sh ARGS` as the nodes RANKS of a two-node run start it (the README's commands), one process
    each; node N with a umask of its own, so that the files it creates are told apart (not world-readable)."""
    port = str(free_port())
    return [
        launches.start(
            ("./train.sh", *args), umask=0o027 if rank else 0o022, NNODES="2", NODE_RANK=str(rank),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NPROC_PER_NODE="1", **env,
        )
        for rank in ranks
    ]  # fmt: skip


def wait_for_checkpoint(out: Path, running: list[Launch], limit: float = 600) -> Path:
    deadline = time.monotonic() + limit
    while not checkpoints(out):
        for launch in running:
            assert launch.process.poll() is None, launch.err.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.02)
    return checkpoints(out)[-1]


def logged(out: Path) -> dict[int, float]:
    return dict(losses(json.loads((out / "trainer_state.json").read_text())))


def assert_same_losses(run: Path, reference: Path, steps: int = STEPS) -> None:
    mine, theirs = logged(run), logged(reference)
    assert sorted(mine) == list(range(1, steps + 1)) == sorted(theirs)
    off = [(s, mine[s], theirs[s]) for s in theirs if abs(mine[s] - theirs[s]) > LOSS_RTOL * abs(theirs[s])]
    assert not off, off[:5]


def assert_same_adapter(run: Path, reference: Path) -> None:
    mine, theirs = (load_file(folder / "adapter_model.safetensors") for folder in (run, reference))
    assert mine.keys() == theirs.keys()
    for name, tensor in theirs.items():
        torch.testing.assert_close(mine[name], tensor, rtol=1e-3, atol=1e-5, msg=name)


def assert_merges_and_verifies(adapter: Path, out: Path, capsys) -> None:
    with one_thread():
        result = run_main(export_main, ["--adapter", str(adapter), "--out", str(out)], capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "verification.json").read_text())["passed"]


def error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@full  # 75 s of imports on 2 cores: the suite stays within its 8 minutes without it
def test_two_nodes_train_as_one_process_does_and_node_0_alone_writes_the_run(
    launches, tiny_model, faces_data, one_process, tmp_path, capsys
):
    out, writes, hooks = tmp_path / "lora", tmp_path / "writes", tmp_path / "hooks"
    writes.mkdir()
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(WRITES_HOOK)
    watch = {"PYTHONPATH": str(hooks), "FACELLM_TEST_WATCH": str(out), "FACELLM_TEST_WRITES": str(writes)}
    # no preflight: 20 s a node; what node 1 does with it is the next test's
    args = [*train_args(tiny_model, faces_data, out, "save_steps=10", steps=SHORT), "--no-preflight"]
    node0, node1 = (node.wait(600) for node in start_nodes(launches, args, **watch))
    assert node0.returncode == 0, node0.stderr[-3000:]
    assert node1.returncode == 0, node1.stderr[-3000:]

    # each launch says where it stands; node 0 shows one step bar with the loss, and the summary
    for rank, node in enumerate((node0, node1)):
        where = f"node {rank} of 2, 1 process per node, rendezvous 127.0.0.1:"
        assert f"train: distributed (torchrun): {where}" in node.stderr
        assert "ddp_timeout 1800 s" in node.stderr and "Warning" not in node.stderr
        assert "Loading weights" not in node.stderr and "[INFO" not in node.stderr
    assert f"train: 100%|██████████| {SHORT}/{SHORT} [" in node0.stderr and ", loss=" in node0.stderr
    assert f"train: {SHORT} steps, final loss" in node0.stdout and not node1.stdout
    assert "Process rank: 1, world size: 2" in (out / "train.node1.log").read_text()

    # world size 2 x batch 2 trains as one process with batch 2 x accumulation 2
    assert_same_losses(out, one_process(SHORT), SHORT)

    # Node 0 writes the run; node 1 only its log, and its rank-1 worker its RNG state in each checkpoint.
    # Which node created a file shows in its mode (umask 022 on node 0: 0644, 027 on node 1: 0640; safetensors
    # writes 0600 whoever writes); which process wrote what, in the hook's records.
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    modes = {f: (out / f).stat().st_mode & 0o777 for f in files}
    assert {f for f, mode in modes.items() if mode == 0o640} == {
        "train.node1.log", "checkpoint-10/rng_state_1.pth", "checkpoint-20/rng_state_1.pth",
    }  # fmt: skip
    assert {f for f, mode in modes.items() if mode not in (0o644, 0o640)} == {
        f for f in files if f.endswith(".safetensors")
    }
    assert {
        "facellm_resolved_config.yaml", "train.log", "train.node1.log", "training_loss.png",
        "adapter_model.safetensors", "adapter_config.json", "trainer_state.json",
    } <= files  # fmt: skip
    assert not [f for f in files if ("node1" in f and f != "train.node1.log") or ".tmp" in f]
    assert not [f for f in files if Path(f).name.startswith(".")]  # no half-written file left
    writers = defaultdict(set)
    for record in writes.glob("*.log"):
        for line in record.read_text().splitlines():
            who, path = line.split("\t")
            writers[Path(path).relative_to(out).as_posix()].add(who)
    assert not {f: w for f, w in writers.items() if len(w) > 1}, "two processes wrote one file"
    by_node1 = {f for f, w in writers.items() if " node1 " in next(iter(w))}
    assert by_node1 == {"train.node1.log"}
    assert {"facellm_resolved_config.yaml", "train.log", "trainer_state.json"} <= set(writers)

    assert_merges_and_verifies(out, tmp_path / "merged", capsys)


def test_node_1_checks_the_data_but_writes_only_its_log(
    faces_data, tiny_model, tmp_path, monkeypatch, capsys
):
    # the trainer a stand-in that keeps the config it was started on (the run itself: the test above)
    fake = tmp_path / "bin"
    fake.mkdir()
    keep = 'echo "$2" > "$FAKE_DIR/path"; cp "$2" "$FAKE_DIR/got"'
    (fake / "llamafactory-cli").write_text(f"#!/bin/sh\n{keep}\n")
    (fake / "llamafactory-cli").chmod(0o755)
    for name, value in {
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "FAKE_DIR": str(fake), "NNODES": "2",
        "NODE_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    out = tmp_path / "lora"
    result = run_main(train_main, train_args(tiny_model, faces_data, out), capsys)
    assert result.returncode == 0, result.stderr
    assert "preflight: 48 records, 16 distinct images" in result.stderr  # every node sees the data
    assert sorted(p.name for p in out.iterdir()) == ["train.node1.log"]
    started_on = Path((fake / "path").read_text().strip())
    assert out not in started_on.parents and not started_on.exists()  # its own copy, removed after
    got = (fake / "got").read_text()
    assert f"output_dir: {out}\n" in got and "ddp_timeout: 1800\n" in got


# Stand-ins for Slurm's commands. srun, as in a job of SLURM_JOB_NUM_NODES nodes with one task each: every
# task runs the command with its node's SLURM_NODEID; --kill-on-bad-exit=1 ends the others when one fails.
SRUN = """\
import json, os, subprocess, sys, time

arguments = sys.argv[1:]
first = next((i for i, a in enumerate(arguments) if not a.startswith("--")), len(arguments))
options, command = arguments[:first], arguments[first:]
folder = os.environ["FAKE_SLURM_DIR"]
hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], check=True,
                       capture_output=True, text=True).stdout.split()
assert len(hosts) == int(os.environ["SLURM_JOB_NUM_NODES"]), hosts
json.dump({"options": options, "command": command}, open(os.path.join(folder, "srun.json"), "w"))
tasks = []
for node, host in enumerate(hosts):
    env = {**os.environ, "SLURM_NODEID": str(node), "SLURM_PROCID": str(node), "SLURM_LOCALID": "0",
           "SLURMD_NODENAME": host, "SLURM_STEP_NUM_NODES": str(len(hosts))}
    with open(os.path.join(folder, f"node{node}.out"), "w") as out, \\
         open(os.path.join(folder, f"node{node}.err"), "w") as err:
        tasks.append(subprocess.Popen(command, env=env, stdout=out, stderr=err))
while any(task.poll() is None for task in tasks):
    if "--kill-on-bad-exit=1" in options and any(task.poll() for task in tasks):
        for task in tasks:
            task.poll() is None and task.terminate()
    time.sleep(0.05)
sys.exit(max(abs(task.returncode) for task in tasks))
"""
# `scontrol show hostnames LIST`: gpu[07-08],login1 -> gpu07 gpu08 login1, one a line
SCONTROL = """\
import re, sys

assert sys.argv[1:3] == ["show", "hostnames"], sys.argv
for name, ranges in re.findall(r"([^,\\[]+)(?:\\[([^\\]]*)\\])?", sys.argv[3]):
    for part in ranges.split(",") if ranges else [""]:
        low, _, high = part.partition("-")
        numbers = range(int(low), int(high or low) + 1) if low else [None]
        for n in numbers:
            print(name if n is None else f"{name}{n:0{len(low)}d}")
"""


def test_the_slurm_example_starts_train_sh_on_every_node_with_its_rank(tmp_path):
    fake = tmp_path / "slurm-bin"
    fake.mkdir()
    for name, code in (("srun", SRUN), ("scontrol", SCONTROL)):
        (fake / name).write_text(f"#!{sys.executable}\n{code}")
        (fake / name).chmod(0o755)
    llamafactory_keys()  # LLaMA-Factory's argument names, cached for both nodes before they start
    env = {k: v for k, v in command_env().items() if k not in NODE_SETTINGS}
    env.update(
        PATH=f"{fake}{os.pathsep}{env['PATH']}", FAKE_SLURM_DIR=str(tmp_path), SLURM_JOB_ID="4242",
        SLURM_JOB_NODELIST="gpu[07-08]", SLURM_JOB_NUM_NODES="2", SLURM_GPUS_ON_NODE="4",
    )  # fmt: skip
    out = tmp_path / "run"
    result = subprocess.run(
        ["bash", "configs/slurm/train_multinode.sbatch", "configs/internvl3_8b_lora_sft.yaml",
         f"output_dir={out}", "--dry-run", "--no-preflight"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    nodes = [tuple((tmp_path / f"node{n}.{kind}").read_text() for kind in ("out", "err")) for n in (0, 1)]
    assert result.returncode == 0, (result.stderr, nodes)
    srun = json.loads((tmp_path / "srun.json").read_text())
    assert srun["options"] == ["--kill-on-bad-exit=1"]
    # each node's train.sh: its rank, the node count, the GPUs Slurm gave it, node 0's host and a port
    # of the job's own, the same recipe, into the same folder
    for rank, (stdout, stderr) in enumerate(nodes):
        assert stderr.splitlines() == [
            f"train: distributed (torchrun): node {rank} of 2, 4 processes per node, rendezvous gpu07:29742; "
            "ddp_timeout 1800 s"
        ], stderr
        assert f"output_dir: {out}\n" in stdout and "ddp_timeout: 1800\n" in stdout
    assert nodes[0][0] == nodes[1][0]
    assert not out.exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    ("env", "extra", "message"),
    [
        ({"NNODES": "2", "NODE_RANK": "0"}, (), "NNODES=2: set MASTER_ADDR and MASTER_PORT on every node"),
        ({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "node0"}, (), "NNODES=2: set MASTER_PORT on every"),
        ({"NNODES": "2", "NODE_RANK": "2"}, (), "NODE_RANK=2 with NNODES=2: node ranks go from 0 to 1"),
        ({"NNODES": "two"}, (), "NNODES='two' is not a whole number"),
        ({"NNODES": "2", "MASTER_ADDR": "node0", "MASTER_PORT": "99999"}, (), "MASTER_PORT=99999: must be 1"),
        ({"NPROC_PER_NODE": "0"}, (), "NPROC_PER_NODE=0: must be at least 1"),
        ({}, ("ddp_timeout=0",), "ddp_timeout: 0 is not a number of seconds"),
    ],
)
def test_node_settings_are_checked_before_anything_starts(env, extra, message, tmp_path, monkeypatch, capsys):
    for name in NODE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ["configs/internvl3_8b_lora_sft.yaml", f"output_dir={tmp_path / 'out'}", *extra, "--no-preflight"]
    assert_one_line_error(run_main(train_main, [*args, "--dry-run"], capsys), message)
    assert not (tmp_path / "out").exists()


GLOO = "[rank0]: RuntimeError: [/pytorch/third_party/gloo/gloo/transport/tcp"
LOST = f"{GLOO}/pair.cc:538] Read error [127.0.0.1]:50899: Connection reset by peer"
HUNG = f"{GLOO}/unbound_buffer.cc:78] Timed out waiting 15000ms for recv operation to complete"
TIMEOUT_HINT = "ddp_timeout=SECONDS sets the wait"


# What the trainer's output ends with when a distributed run fails (abridged from the runs below).
def torchrun_failed(rank: int, exitcode: int, worker_lines: str = "") -> bytes:
    traceback = "Signal 9 (SIGKILL) received by PID 24430" if exitcode < 0 else "To enable traceback see: ..."
    return f"""{worker_lines}
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
/venv/lib/python3.11/site-packages/llamafactory/launcher.py FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-01-01_12:00:00
  host      : node1
  rank      : {rank} (local_rank: 0)
  exitcode  : {exitcode} (pid: 24430)
  error_file: <N/A>
  traceback : {traceback}
============================================================
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/llamafactory/launcher.py", line 115, in launch
subprocess.CalledProcessError: Command '['torchrun', '--nnodes', '2']' returned non-zero exit status 1.
""".encode()


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (torchrun_failed(1, -9), "worker rank 1 was killed by SIGKILL"),
        (
            torchrun_failed(0, 1, LOST),
            "rank 0 lost its connection to the other workers (Connection reset by peer): one of them stopped "
            "first (on another node: its log says why)",
        ),
        (
            torchrun_failed(0, 1, HUNG),
            "rank 0 waited 15 s (ddp_timeout) for a worker that stopped answering: a node hung or dropped "
            f"off the network; {TIMEOUT_HINT}",
        ),
        (
            torchrun_failed(1, 1, f"{LOST}\n[rank1]: ValueError: Cannot find valid samples"),
            "rank 1: ValueError: Cannot find valid samples",
        ),
        (
            b"torch.distributed.DistStoreError: Timed out after 16 seconds waiting for clients. 1/2 clients "
            b"joined.\nsubprocess.CalledProcessError: Command 'torchrun' returned non-zero exit status 1.\n",
            "only 1 of 2 nodes joined within 16 s: start ./train.sh on every node (NODE_RANK 0 to 1) with "
            f"the same NNODES, MASTER_ADDR and MASTER_PORT; {TIMEOUT_HINT}",
        ),
        (
            b"torch.distributed.DistNetworkError: The client socket has timed out after 15000ms while trying "
            b"to connect to (127.0.0.1, 29623).\nsubprocess.CalledProcessError: Command 'x' returned 1.\n",
            "node 0 did not answer at 127.0.0.1:29623 within 15 s: start it (NODE_RANK=0) and check "
            f"MASTER_ADDR and MASTER_PORT; {TIMEOUT_HINT}",
        ),
        (
            b"Traceback (most recent call last):\nValueError: Cannot find valid samples\n",
            "ValueError: Cannot find valid samples",
        ),
    ],
)
def test_a_failed_distributed_run_names_the_worker_that_failed_and_why(tail, expected):
    assert what_failed(tail) == expected


@full
def test_two_processes_on_one_node_stop_on_sigterm_resume_and_train_as_one_process_does(
    launches, tiny_model, faces_data, one_process, tmp_path, capsys
):
    out = tmp_path / "lora"
    command = ("./train.sh", *train_args(tiny_model, faces_data, out, "save_steps=10"), "--no-preflight")
    two = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}
    launch = launches.start(command, **two)
    wait_for_checkpoint(out, [launch])
    started = psutil.Process(launch.process.pid).children(recursive=True)  # the cli, torchrun, workers
    assert len(launch.workers()) == 2
    launch.process.send_signal(signal.SIGTERM)
    stopped = launch.wait(120)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "train: stopped by SIGTERM; the same command resumes from" in stopped.stderr
    # every process it started has ended with it: none trains on, orphaned, into the folder
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline()[:3] for p in left]
    newest = checkpoints(out)[-1]
    assert int(newest.name.split("-")[1]) < STEPS, "the stop came too late"

    resumed = launches.start(command, **two).wait(600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"train: resuming from {newest}" in resumed.stderr
    assert "train: distributed (torchrun): 2 processes; ddp_timeout 1800 s" in resumed.stderr
    assert_same_losses(out, one_process())
    assert_same_adapter(out, one_process())
    assert_merges_and_verifies(out, tmp_path / "merged", capsys)


@full
def test_a_killed_worker_stops_every_node_at_once_and_the_same_commands_resume(
    launches, tiny_model, faces_data, one_process, tmp_path
):
    out = tmp_path / "lora"
    args = [*train_args(tiny_model, faces_data, out, "save_steps=10"), "--no-preflight"]
    nodes = start_nodes(launches, args)
    wait_for_checkpoint(out, nodes)
    (worker,) = nodes[1].workers()
    worker.kill()  # SIGKILL
    killed_at = time.monotonic()
    node0, node1 = (node.wait(120) for node in nodes)
    assert time.monotonic() - killed_at < 60  # measured: 6 s; nothing waits for ddp_timeout
    newest = checkpoints(out)[-1]
    assert int(newest.name.split("-")[1]) < STEPS, "the kill came too late"
    resume = f"the same command, run again on every node, resumes from {newest}"
    assert node1.returncode == 1 and error_line(node1) == (
        f"error: training failed (exit 1): worker rank 1 was killed by SIGKILL; {resume}; full log: "
        f"{out / 'train.node1.log'}"
    )
    assert node0.returncode == 1 and error_line(node0).startswith(
        "error: training failed (exit 1): rank 0 lost its connection to the other workers (Connection "
    )
    assert f"(on another node: its log says why); {resume}; full log: {out / 'train.log'}" in node0.stderr

    again = [node.wait(600) for node in start_nodes(launches, args)]
    assert all(node.returncode == 0 for node in again), again[0].stderr[-3000:] + again[1].stderr[-3000:]
    assert all(f"train: resuming from {newest}" in node.stderr for node in again)
    assert_same_losses(out, one_process())
    assert_same_adapter(out, one_process())


@full
def test_a_hung_node_is_given_up_after_ddp_timeout(launches, tiny_model, faces_data, tmp_path):
    out = tmp_path / "lora"
    # 20 s: time enough for both workers to start on two busy cores (they meet within ddp_timeout too)
    args = [*train_args(tiny_model, faces_data, out, "save_steps=10", "ddp_timeout=20"), "--no-preflight"]
    nodes = start_nodes(launches, args)
    wait_for_checkpoint(out, nodes)
    (worker,) = nodes[1].workers()
    worker.suspend()  # SIGSTOP: alive, connected and silent, as a node that hangs or drops off the network
    stopped_at = time.monotonic()
    node0 = nodes[0].wait(120)
    assert time.monotonic() - stopped_at < 20 + 30  # measured: 5 s past ddp_timeout
    assert node0.returncode == 1
    assert error_line(node0).startswith(
        "error: training failed (exit 1): rank 0 waited 20 s (ddp_timeout) for a worker that stopped "
        "answering: a node hung or dropped off the network; ddp_timeout=SECONDS sets the wait; the same "
    )


@full
def test_nodes_that_never_meet_stop_after_ddp_timeout(launches, tiny_model, faces_data, tmp_path):
    # node 0 of one run and node 1 of another, at ports of their own: neither ever sees another node
    runs = [[*train_args(tiny_model, faces_data, tmp_path / run, "ddp_timeout=10"), "--no-preflight"]
            for run in ("a", "b")]  # fmt: skip
    (node0,), (node1,) = start_nodes(launches, runs[0], (0,)), start_nodes(launches, runs[1], (1,))
    node0, node1 = node0.wait(300), node1.wait(300)
    assert node0.returncode == node1.returncode == 1
    assert "only 1 of 2 nodes joined within 1" in error_line(node0)  # 10 s, and the time to say it
    assert "(NODE_RANK 0 to 1) with the same NNODES, MASTER_ADDR and MASTER_PORT" in node0.stderr
    assert "node 0 did not answer at 127.0.0.1:" in error_line(node1) and "within 10 s" in node1.stderr


def answered(folder: Path) -> int:
    count = 0
    for path in folder.rglob("sample_*.json"):
        try:
            count += sum("prediction" in q for q in json.loads(path.read_text())["questions"].values())
        except (OSError, ValueError):  # replaced while being read
            continue
    return count


@full
def test_facexbench_under_torchrun_gives_the_one_process_results_and_a_killed_shard_resumes(
    launches, tiny_model, tmp_path, tmp_path_factory, capsys
):
    model = noisy_copy(tiny_model, tmp_path_factory.getbasetemp() / "noisy-tiny")  # answers differ
    bench = build_benchmark(SAMPLE_FACES, tmp_path / "fxb", per_task=8)  # 24 questions, 12 a shard
    flags = [
        "--model", "FaceLLM-tiny", "--model-path", str(model), "--benchmark-dir", str(bench),
        "--max-new-tokens", "8", "--protocol", "training", "--dtype", "float32", "--no-progress",
    ]  # fmt: skip
    sharded = tmp_path / "sharded"
    command = ("torchrun", "--standalone", "--nproc-per-node", "2", "vlmeval/evaluate.py", *flags,
               "--results-dir", str(sharded))  # fmt: skip
    launch = launches.start(command)
    deadline = time.monotonic() + 600
    while not answered(sharded / "shards" / "1-of-2"):
        assert launch.process.poll() is None, launch.err.read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (shard1,) = [w for w in launch.workers() if w.environ().get("RANK") == "1"]
    shard1.kill()
    killed = launch.wait(120)
    assert killed.returncode != 0 and 0 < answered(sharded / "shards") < 24, "the kill came too late"
    assert not (sharded / "results.json").exists()

    resumed = launches.start(command).wait(600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    script = import_file(REPO / "vlmeval" / "evaluate.py", "facellm_vlmeval_evaluate_script")
    with one_thread():
        whole = run_main(script.main, [*flags, "--results-dir", str(tmp_path / "whole")], capsys)
    assert whole.returncode == 0, whole.stderr[-3000:]
    merged = sorted(p.name for p in (tmp_path / "whole").iterdir() if p.is_file())
    assert len([n for n in merged if n.startswith("sample_")]) == 3 and "results.json" in merged
    for name in merged:
        assert (sharded / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    predictions = {
        q["prediction"] for p in (tmp_path / "whole").glob("sample_*.json")
        for q in json.loads(p.read_text())["questions"].values()
    }  # fmt: skip
    assert len(predictions) > 3  # the noisy model's answers differ: the comparison means something
