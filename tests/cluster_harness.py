"""A real multi-node Ray cluster on one machine, for the cluster tests.

Every node is its own `ray start --block` process (head first, then workers joining it), as on a real
cluster, all on 127.0.0.1 with ports picked free so that it never collides with the session's other
Ray (the `ray_local` fixture) or with another test run. Why `--block`: the `ray start` process then
stays the parent of its node's daemons (gcs_server, raylet, dashboard, agents), so this module knows
exactly which processes are *its* own. Stopping the cluster terminates those processes by PID; it
never runs `ray stop`, which would stop every Ray on the machine.

Each node gets its own short temp dir (Unix socket paths must stay under ~107 characters, which
pytest's tmp_path does not guarantee), removed when the cluster stops.

    cluster = start_cluster(num_workers=2)
    client = cluster.job_client()          # ray.job_submission.JobSubmissionClient on the dashboard
    cluster.kill_node(cluster.workers[0])  # SIGKILL the worker's raylet: a node failure
    cluster.stop()
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.helpers import free_port
from tests.loopback import sitecustomize as loopback

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
STOP_GRACE_SECONDS = 5.0  # LocalCluster.stop: how long a node's `ray start` may take to stop its daemons


# How fast the GCS counts a killed node dead (Ray's names, read by gcs_server; defaults: every 3 s, 10-s timeout,
# 5 failures). A SIGKILLed raylet refuses the check at once, so it is declared dead after about 3 x 0.5 s instead
# of 15 s or more; a live but busy raylet still has 5 s to answer each check, three times over.
HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "5000",
    "RAY_health_check_failure_threshold": "3",
}


def cluster_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every node (and so of every job driver and worker): loopback only, no
    telemetry, fast detection of a dead node (HEALTH_CHECK), this venv's python first on PATH, no
    RAY_ADDRESS inherited from the caller."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR")}
    env.update(
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_DEDUP_LOGS="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        **HEALTH_CHECK,
    )
    loopback.export(env)  # nodes register and connect on 127.0.0.1, not the machine's outward address
    env.update(extra or {})
    return env


@dataclass
class NodeProcess:
    """One node: its `ray start --block` process, temp dir and log."""

    name: str
    proc: subprocess.Popen
    temp_dir: Path
    log_path: Path
    killed: bool = False  # set by LocalCluster.kill_node: its exit is expected

    def processes(self) -> list[psutil.Process]:
        """The node's daemons and workers (every descendant of its `ray start`)."""
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def raylet(self) -> psutil.Process:
        for p in self.processes():
            try:
                if p.name() == "raylet":
                    return p
            except psutil.NoSuchProcess:
                continue
        raise RuntimeError(f"node {self.name}: no raylet process (is it running?)\n{self.log_tail()}")

    def node_id(self) -> str:
        """The node id Ray gave this node, read from its raylet's command line."""
        for arg in self.raylet().cmdline():
            if arg.startswith("--node_id="):
                return arg.split("=", 1)[1]
        raise RuntimeError(f"node {self.name}: raylet command line has no --node_id")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class LocalCluster:
    root: Path
    gcs_port: int
    dashboard_port: int
    env: dict[str, str]
    head: NodeProcess | None = None
    workers: list[NodeProcess] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def nodes(self) -> list[NodeProcess]:
        return [n for n in [self.head, *self.workers] if n is not None]

    def job_client(self):
        from ray.job_submission import JobSubmissionClient  # noqa: PLC0415

        return JobSubmissionClient(self.dashboard_url)

    def add_worker(self, resources: dict[str, float] | None = None, num_cpus: int = 1,
                   object_store_memory: int = 200_000_000) -> NodeProcess:
        """Start one more worker node and wait until the head sees it."""
        for attempt in (1, 2):
            name = f"w{len(self.workers) + 1}" + ("" if attempt == 1 else "b")
            args = [
                "--address", self.address,
                "--resources", json.dumps(resources if resources is not None else {"worker_node": 1}),
                *_node_args(num_cpus, object_store_memory),
            ]
            node = _start_node(name, self.root, args, self.env)
            self.workers.append(node)
            try:
                self.wait_for_nodes()
                return node
            except RuntimeError:
                # `ray start` gives a raylet a fixed 30 s to register with the GCS; on a machine
                # that is briefly overloaded that can pass. One retry, then the error stands.
                self.workers.remove(node)
                _terminate(node)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def alive_node_ids(self) -> set[str]:
        """Ids of the nodes GCS counts as alive, through the dashboard's state API."""
        from ray.util.state import list_nodes  # noqa: PLC0415

        nodes = list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")], limit=1000, timeout=60,
                           raise_on_missing_output=False)
        return {n.node_id for n in nodes}

    def non_loopback_sockets(self) -> list[str]:
        """Sockets of the cluster's processes off loopback (see `off_loopback_sockets`)."""
        return off_loopback_sockets(p for node in self.nodes if node.alive
                                    for p in [psutil.Process(node.proc.pid), *node.processes()])

    def wait_for_nodes(self, timeout: float = 120.0) -> None:
        """Wait until GCS counts every node started here (and not killed) as alive.

        A killed node stays 'alive' in GCS until its health checks time out; that does not matter
        here, so this waits for our own nodes only, by node id."""
        deadline = time.monotonic() + timeout
        missing: set[str] | str = "?"
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.alive and not node.killed:
                    raise RuntimeError(f"node {node.name} exited with {node.proc.returncode}:\n{node.log_tail()}")
            try:
                expected = {n.node_id() for n in self.nodes if not n.killed}
                missing = expected - self.alive_node_ids()
            except Exception as exc:  # noqa: BLE001 - dashboard or raylet still starting
                missing = f"not known yet ({type(exc).__name__}: {exc})"
            if not missing:
                return
            time.sleep(0.5)
        raise TimeoutError(f"nodes not alive after {timeout:.0f} s: {missing}")

    def kill_node(self, node: NodeProcess, timeout: float = 30.0) -> int:
        """A node failure: SIGKILL the node's raylet (its `ray start --block` then takes down the
        node's other daemons, and its workers exit when they lose the raylet). Returns the raylet PID."""
        raylet = node.raylet()
        node.killed = True
        raylet.send_signal(signal.SIGKILL)
        try:
            node.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _terminate(node)
        return raylet.pid

    def stop(self) -> None:
        """Workers first, then the head; by PID only. Idempotent."""
        nodes = list(reversed(self.nodes))
        leftovers = {id(n): n.processes() for n in nodes}  # before signalling: orphans have no parent
        for node in nodes:  # signal all first, so that the nodes shut down in parallel
            if node.alive:
                node.proc.terminate()
        for node in nodes:  # a test cluster keeps nothing worth a slow shutdown: a short grace, then SIGKILL
            _reap(node, leftovers[id(node)], timeout=STOP_GRACE_SECONDS, leftovers_timeout=1.0)
        shutil.rmtree(self.root, ignore_errors=True)


def is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback


def off_loopback_sockets(processes) -> list[str]:
    """Every TCP/UDP socket of `processes` bound or connected to an address off loopback, as
    'name[pid]: local -> remote'. Empty when all their traffic stays on 127.0.0.1."""
    found = []
    for proc in processes:
        try:
            sockets, name = proc.net_connections(kind="inet"), proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [f"{name}[{proc.pid}]: {s.laddr} -> {s.raddr or '-'}" for s in sockets
                  if any(not is_loopback(a.ip) for a in (s.laddr, s.raddr) if a)]
    return found


def _node_args(num_cpus: int, object_store_memory: int) -> list[str]:
    """Per-node flags: every port this node would otherwise take from a fixed default is picked free."""
    return [
        "--node-ip-address", "127.0.0.1",
        "--num-cpus", str(num_cpus),
        "--num-gpus", "0",
        "--object-store-memory", str(object_store_memory),
        "--node-manager-port", str(free_port()),
        "--object-manager-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()),
        "--min-worker-port", "0",
        "--max-worker-port", "0",
        "--disable-usage-stats",
        "--block",
    ]


def _start_node(name: str, root: Path, args: list[str], env: dict[str, str]) -> NodeProcess:
    temp_dir = root / name
    temp_dir.mkdir(parents=True, exist_ok=True)
    log_path = root / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [RAY, "start", "--temp-dir", str(temp_dir), *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the test run reaches pytest, not the nodes
        )
    return NodeProcess(name=name, proc=proc, temp_dir=temp_dir, log_path=log_path)


def _terminate(node: NodeProcess) -> None:
    """SIGTERM the node's `ray start` (it stops its own daemons), then SIGKILL whatever is left."""
    leftovers = node.processes()
    if node.alive:
        node.proc.terminate()
    _reap(node, leftovers)


def _reap(node: NodeProcess, leftovers: list[psutil.Process], timeout: float = 20.0, leftovers_timeout: float = 5.0) -> None:
    """Wait for a signalled node's `ray start` to exit; SIGKILL it and its processes if they linger."""
    try:
        node.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        node.proc.kill()
        node.proc.wait(timeout=5)
    _gone, alive = psutil.wait_procs([p for p in leftovers if p.is_running()], timeout=leftovers_timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _wait_for_dashboard(cluster: LocalCluster, timeout: float = 90.0) -> None:
    """The job API answers once the dashboard's HTTP server is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.head is not None and not cluster.head.alive:
            raise RuntimeError(f"head exited with {cluster.head.proc.returncode}:\n{cluster.head.log_tail()}")
        try:
            with urllib.request.urlopen(f"{cluster.dashboard_url}/api/version", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"dashboard at {cluster.dashboard_url} did not answer in {timeout:.0f} s:\n"
                       f"{cluster.head.log_tail() if cluster.head else ''}")


def start_cluster(num_workers: int = 2, head_cpus: int = 1, worker_cpus: int = 1,
                  object_store_memory: int = 200_000_000, env: dict[str, str] | None = None) -> LocalCluster:
    """Head (with dashboard and job API on 127.0.0.1) plus `num_workers` worker nodes, each with a
    `worker_node` custom resource. On any failure to start, whatever was started is stopped again."""
    root = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    cluster = LocalCluster(root=root, gcs_port=free_port(), dashboard_port=free_port(), env=cluster_env(env))
    try:
        head_args = [
            "--head", "--port", str(cluster.gcs_port),
            "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(cluster.dashboard_port),
            "--ray-client-server-port", str(free_port()),
            *_node_args(head_cpus, object_store_memory),
        ]
        for attempt in (1, 2):
            cluster.head = _start_node("head" if attempt == 1 else "head-b", root, head_args, cluster.env)
            try:
                _wait_for_dashboard(cluster)
                cluster.wait_for_nodes()
                break
            except RuntimeError:  # the head's own 30-s startup limit (see add_worker): one retry
                _terminate(cluster.head)
                if attempt == 2:
                    raise
        for _ in range(num_workers):
            cluster.add_worker(num_cpus=worker_cpus, object_store_memory=object_store_memory)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def job_status(client, job_id: str) -> str:
    """The job's status as a plain string ('RUNNING', 'SUCCEEDED', ...), whatever Ray's enum prints."""
    return str(client.get_job_status(job_id)).rsplit(".", 1)[-1]


def wait_for_job(client, job_id: str, timeout: float = 180.0, poll: float = 0.5,
                 while_running: Callable[[], None] | None = None) -> str:
    """Poll until the job ends; returns its final status as a string. `while_running`, if given, is
    called at every poll before the end (to sample the cluster during the job). TimeoutError names the
    job's state."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = job_status(client, job_id)
        if status in TERMINAL:
            return status
        if while_running is not None:
            while_running()
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} still {status} after {timeout:.0f} s; logs:\n{client.get_job_logs(job_id)[-4000:]}")
