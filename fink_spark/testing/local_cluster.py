"""A real Spark standalone cluster on loopback, from the installed pyspark distribution.

One master and N workers, each a separate JVM with its own cores and memory, as on a
real cluster; the tests submit the streaming job to it and kill a worker mid-stream.

    .venv/bin/python -m fink_spark.testing.local_cluster --workers 2     # prints the master URL; Ctrl-C stops it
    ./spark-submit.sh --master spark://127.0.0.1:<port> jobs/stream.py --config ...
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pyspark

from fink_spark.testing.local_broker import free_port

SPARK_HOME = Path(pyspark.__file__).parent


@dataclass
class LocalSparkCluster:
    """A standalone master and `workers` workers on 127.0.0.1 (each `cores` cores, `memory`)."""

    workers: int = 2
    cores: int = 1
    memory: str = "1g"
    port: int = 0
    workdir: Path | None = None
    _master: subprocess.Popen[bytes] | None = None
    _workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _spark_class(self, name: str, main_class: str, *args: str) -> subprocess.Popen[bytes]:
        assert self.workdir is not None
        env = {
            **os.environ,
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_WORKER_DIR": str(self.workdir / "work"),
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        }
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the process keeps it
        return subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), main_class, *args],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )

    def start(self, timeout: float = 60.0) -> LocalSparkCluster:
        self.workdir = self.workdir or Path(tempfile.mkdtemp(prefix="fink-spark-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._master = self._spark_class(
            "master", "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(free_port()),
        )
        _wait_for_port(self.port, timeout)
        for index in range(self.workers):
            self._workers.append(self._spark_class(
                f"worker{index}", "org.apache.spark.deploy.worker.Worker", self.url,
                "--host", "127.0.0.1", "--cores", str(self.cores), "--memory", self.memory,
                "--webui-port", str(free_port()),
            ))
        self._wait_for_workers(timeout)
        return self

    def _wait_for_workers(self, timeout: float) -> None:
        assert self.workdir is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = [(self.workdir / f"worker{i}.log").read_text(errors="replace") for i in range(self.workers)]
            if all("Successfully registered with master" in text for text in logs):
                return
            time.sleep(0.5)
        raise TimeoutError(f"The Spark workers did not register within {timeout:.0f} s; see {self.workdir}")

    def kill_worker(self, index: int = 0) -> None:
        """kill -9 a worker and the executors it runs, as when a machine dies."""
        process = self._workers[index]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for executor in self._executor_pids(index):
            try:
                os.kill(executor, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _executor_pids(self, index: int) -> list[int]:
        """Executors of one worker: JVMs whose command line names that worker's work folder."""
        assert self.workdir is not None
        found = subprocess.run(["pgrep", "-f", "CoarseGrainedExecutorBackend"], capture_output=True, text=True)
        pids = []
        for pid in found.stdout.split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"--worker-url spark://Worker@127.0.0.1:{self._worker_port(index)}" in command.replace("\0", " "):
                pids.append(int(pid))
        return pids

    def _worker_port(self, index: int) -> str:
        assert self.workdir is not None
        text = (self.workdir / f"worker{index}.log").read_text(errors="replace")
        marker = "Starting Spark worker 127.0.0.1:"
        start = text.index(marker) + len(marker)
        return text[start:].split(" ", 1)[0]

    def stop(self) -> None:
        for process in [*self._workers, self._master]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-f", f"spark://127.0.0.1:{self.port}"], capture_output=True)

    def __enter__(self) -> LocalSparkCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"The Spark master did not listen on port {port} within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a Spark standalone cluster on loopback until Ctrl-C.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="cores per worker")
    parser.add_argument("--memory", default="1g", help="memory per worker")
    args = parser.parse_args()
    with LocalSparkCluster(args.workers, args.cores, args.memory) as cluster:
        print(f"master {cluster.url}; logs in {cluster.workdir}", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
