"""Distributed training: where a node stands, the torchrun workers LLaMA-Factory starts, why they stopped.

train.sh hands a distributed run (several GPUs, FORCE_TORCHRUN, DeepSpeed, NNODES > 1) to `llamafactory-cli
train`, which starts torchrun and its workers. Every node runs the same command with its own NODE_RANK; the
node settings are checked before anything starts, and each node says where it stands. The workers' output
goes to the node's log and their step bar to the terminal; a signal stops them all; when they fail, the
output says which worker failed first and why, in one line. A worker that dies ends the run on every node,
at once where its connections close and at the latest after ddp_timeout seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.train.progress import WorkerView

# signals passed on to the trainer; train.sh then exits 128 + the signal, as a shell reports a killed command
FORWARDED = (signal.SIGTERM, signal.SIGINT)
TAIL_BYTES = 64 * 1024  # how much of the trainer's output is kept to find the line that says what failed
# the last line of a Python traceback: "ValueError: ...", "torch.OutOfMemoryError: ..."
EXCEPTION_LINE = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)(?::\s.*)?")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A distributed run waits this many seconds for a node to join and for a worker to answer, then stops with
# an error (LLaMA-Factory's ddp_timeout; transformers' own default, written into the resolved config so that
# the bound is on record whatever a later release defaults to). A worker that dies closes its connections,
# which ends the run at once; the timeout is for a node that hangs or drops off the network.
DDP_TIMEOUT = 1800
# what a stopped distributed run is given to stop its workers (torchrun gives them 30 s, then SIGKILL)
STOP_GRACE = 60
# the lines of a distributed run's output that say why it failed. torchrun's report on the worker it saw
# fail first: "rank      : 1 (local_rank: 0)" ... "exitcode  : -9 (pid: 123)"
ROOT_CAUSE = re.compile(
    r"Root Cause \(first observed failure\):.*?\brank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S
)
# a worker's own exception, as torch prefixes it: "[rank0]: RuntimeError: ..."
WORKER_ERROR = re.compile(r"^\[rank(\d+)\]:\s*(" + EXCEPTION_LINE.pattern + ")$")
LOST_PEER = re.compile(r"Connection (?:reset|closed|refused)[\w ]*|Broken pipe", re.I)
# gloo's, after ddp_timeout: "Timed out waiting 1800000ms for recv operation to complete"
PEER_TIMEOUT = re.compile(r"Timed out waiting (\d+)ms")
# the rendezvous: node 0 waiting for the others, another node waiting for node 0
NOT_JOINED = re.compile(r"Timed out after (\d+) seconds waiting for clients\. (\d+)/(\d+) clients joined")
NO_NODE_0 = re.compile(r"timed out after (\d+)ms while trying to connect to \((\S+), (\d+)\)")
# exceptions that only say that something they started failed: the cause is further up
WRAPPERS = ("CalledProcessError", "ChildFailedError")
# A resumed distributed run starts its Python processes with this sitecustomize.py first on their PYTHONPATH.
# Without it a run on CPUs could never resume: transformers loads the optimizer state with
# map_location=args.device, which accelerate makes torch.device("cpu", 0) for gloo workers, and torch.load
# refuses "cpu:0" (transformers 5.6, accelerate 1.11, torch 2.11; GPU workers get "cuda:N" and are not
# affected). It tells torch.load that "cpu:N" is the CPU, then runs the sitecustomize it hides, if any.
CPU_RESUME = """\
import importlib.machinery, importlib.util, os, re, sys


def _on_the_cpu(storage, location):
    return storage if re.fullmatch(r"cpu:\\d+", location) else None


try:
    import torch.serialization
except ImportError:
    pass
else:
    torch.serialization.register_package(11, lambda storage: None, _on_the_cpu)

_here = os.path.dirname(os.path.abspath(__file__))
_rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
"""


@dataclass(frozen=True)
class Cluster:
    """Where this node stands in a distributed run, from the variables LLaMA-Factory's launcher reads."""

    nodes: int
    node_rank: int
    processes: int | None  # NPROC_PER_NODE; None: one per GPU
    master: str | None  # MASTER_ADDR:MASTER_PORT, where the nodes meet


def _whole(env: dict, name: str, default: int, least: int, most: int | None = None) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise FaceLLMError(f"{name}={raw!r} is not a whole number") from None
    if value < least or (most is not None and value > most):
        span = f"at least {least}" if most is None else f"{least} to {most}"
        raise FaceLLMError(f"{name}={value}: must be {span}")
    return value


def node_settings(env: dict) -> Cluster:
    """The node's place in the run, checked before anything starts: a wrong one would otherwise only show
    as nodes waiting for each other until the rendezvous times out."""
    nodes = _whole(env, "NNODES", 1, 1)
    rank = _whole(env, "NODE_RANK", 0, 0)
    if rank >= nodes:
        raise FaceLLMError(f"NODE_RANK={rank} with NNODES={nodes}: node ranks go from 0 to {nodes - 1}")
    processes = _whole(env, "NPROC_PER_NODE", 0, 1) or None
    master = None
    if nodes > 1:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name, "").strip()]
        if missing:
            raise FaceLLMError(
                f"NNODES={nodes}: set {' and '.join(missing)} on every node, the same everywhere (node 0's "
                "address and a free port): without them each node would wait for the others on its own"
            )
        port = _whole(env, "MASTER_PORT", 0, 1, 65535)
        master = f"{env['MASTER_ADDR'].strip()}:{port}"
    elif env.get("MASTER_PORT", "").strip():
        master = f"{env.get('MASTER_ADDR', '127.0.0.1').strip()}:{_whole(env, 'MASTER_PORT', 0, 1, 65535)}"
    return Cluster(nodes, rank, processes, master)


def describe(cluster: Cluster, timeout: int) -> str:
    """One line on how this node takes part in the run."""
    each = "one process per GPU"
    if cluster.processes:
        each = f"{cluster.processes} process" + ("es" if cluster.processes > 1 else "")
    where = f"node {cluster.node_rank} of {cluster.nodes}, {each} per node" if cluster.nodes > 1 else each
    meet = f", rendezvous {cluster.master}" if cluster.master else ""
    return f"train: distributed (torchrun): {where}{meet}; ddp_timeout {timeout} s"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _copy_output(source, tail: bytearray, workers: WorkerView | None, view) -> None:
    """Pass the trainer's output on to our stderr (the log) as it comes, its step bar also to VIEW (WORKERS
    None: the log is shown whole), keeping its last TAIL_BYTES."""
    sink = getattr(sys.stderr, "buffer", None)
    while chunk := os.read(source.fileno(), 65536):
        if sink is not None:
            sys.stderr.flush()
            sink.write(chunk)
            sink.flush()
        else:
            print(chunk.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)
        if workers is not None and (progress := workers.shown(chunk.decode("utf-8", "replace"))):
            view.write(progress)
            view.flush()
        tail += chunk
        del tail[:-TAIL_BYTES]
    if workers is not None and (end := workers.end()):
        view.write(end)
        view.flush()


def what_failed(tail: bytes) -> str | None:
    """What ended the trainer, from the last lines of its output: in a distributed run, the worker that
    failed first and why, in words; else the exception it ended with."""
    text = ANSI.sub("", tail.decode("utf-8", "replace")).replace("\r", "\n")
    lines = [line.strip() for line in text.splitlines()]
    why = _distributed_failure(text, lines)
    if why:
        return why[:300]
    for line in reversed(lines):
        if EXCEPTION_LINE.fullmatch(line) and not line.split(":")[0].endswith(WRAPPERS):
            return line[:300]
    return None


def _distributed_failure(text: str, lines: list[str]) -> str | None:
    """Why a distributed run failed, from torchrun's and its workers' output, or None when it says nothing
    about it (a single process, or a failure before the workers started)."""
    change = "ddp_timeout=SECONDS sets the wait"
    if found := NOT_JOINED.search(text):
        waited, joined, nodes = found.groups()
        return (
            f"only {joined} of {nodes} nodes joined within {waited} s: start ./train.sh on every node "
            f"(NODE_RANK 0 to {int(nodes) - 1}) with the same NNODES, MASTER_ADDR and MASTER_PORT; {change}"
        )
    if found := NO_NODE_0.search(text):
        waited, address, port = found.groups()
        return (
            f"node 0 did not answer at {address}:{port} within {int(waited) / 1000:g} s: start it "
            f"(NODE_RANK=0) and check MASTER_ADDR and MASTER_PORT; {change}"
        )
    root = ROOT_CAUSE.search(text)
    if root and int(root.group(2)) < 0:  # killed: it said nothing itself
        return f"worker rank {root.group(1)} was killed by {signal_name(-int(root.group(2)))}"
    errors = [(m.group(1), m.group(2)) for line in lines if (m := WORKER_ERROR.match(line))]
    if root:  # the first worker to fail says why; the others only that it is gone
        errors = [error for error in errors if error[0] == root.group(1)] or errors
    if not errors:
        return None
    rank, error = errors[-1]
    if lost := LOST_PEER.search(error):
        return (
            f"rank {rank} lost its connection to the other workers ({lost.group(0).strip()}): one of them "
            "stopped first (on another node: its log says why)"
        )
    if waited := PEER_TIMEOUT.search(error):
        return (
            f"rank {rank} waited {int(waited.group(1)) / 1000:g} s (ddp_timeout) for a worker that stopped "
            f"answering: a node hung or dropped off the network; {change}"
        )
    return f"rank {rank}: {error}"


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # every process of the group has ended
        os.killpg(process.pid, signum)


def run_workers(resolved: Path, env: dict, view) -> tuple[int, int | None, str | None]:
    """Run LLaMA-Factory, passing SIGTERM and SIGINT on (a scheduler's stop must stop the trainer too) and
    waiting for it to end. Returns its exit code, the signal that stopped it (None when none was received)
    and the exception it failed with, if its output ends with one."""
    cli = shutil.which("llamafactory-cli", path=env.get("PATH"))
    if cli is None:  # this environment's, off PATH: put it on, as llamafactory-cli starts torchrun by name
        cli = str(Path(sys.executable).parent / "llamafactory-cli")
        env = {**env, "PATH": os.pathsep.join(filter(None, [str(Path(cli).parent), env.get("PATH")]))}
    running: list[subprocess.Popen] = []
    received: list[int] = []

    # The signal goes to the trainer's whole process group: llamafactory-cli dies of it at once, and torchrun,
    # which it started, must get it too to stop the workers; otherwise they train on, orphaned.
    def forward(signum, _frame):
        received.append(signum)
        for process in running:
            _signal_group(process, signum)

    # a signal ignored here (SIGINT in a background job of a script) stays ignored, as it is by the trainer
    previous = {
        signum: signal.signal(signum, forward)
        for signum in FORWARDED
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        # A group of its own: a Ctrl-C at the terminal reaches it once, through forward(). Its stdout joins
        # its stderr (both go to the log): the Trainer writes its loss lines there.
        process = subprocess.Popen(
            [cli, "train", str(resolved)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        running.append(process)
        if received:  # arrived while it was starting
            _signal_group(process, received[0])
        tail = bytearray()
        workers = None if view is None else WorkerView()
        reader = threading.Thread(
            target=_copy_output, args=(process.stdout, tail, workers, view), daemon=True
        )
        reader.start()
        code = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # Stopped, torchrun outlives llamafactory-cli while it stops the workers: their output closes when they
    # have all ended. Otherwise a process the trainer left behind may hold it open: do not wait long for it.
    reader.join(timeout=STOP_GRACE if received else 5)
    if received and reader.is_alive():
        _signal_group(process, signal.SIGKILL)
    if tail and not tail.endswith(b"\n"):  # a progress bar's line: what follows starts a line of its own
        print(file=sys.stderr)
    return code, (received[0] if received else None), what_failed(bytes(tail))


def uses_torchrun(env: dict, count_devices: bool = True) -> bool:
    """Whether LLaMA-Factory would start torchrun workers (its own rule), or runs on a path of its own.
    Without COUNT_DEVICES (a dry run: importing LLaMA-Factory to count GPUs takes 20 s), only what the
    environment says."""
    if any(
        env.get(name, "").lower() in ("1", "true", "y")
        for name in ("FORCE_TORCHRUN", "USE_RAY", "USE_KT", "USE_MCA", "USE_V1")
    ):
        return True
    if not count_devices:
        return False
    from llamafactory.extras.misc import get_device_count

    return get_device_count() > 1
