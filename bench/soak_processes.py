"""The soak's moving parts as processes: careledger children, their supervisor, and a
PostgreSQL cluster of the soak's own (the one database server a soak may stop and start).

A :class:`Child` is one ``careledger`` command (a worker, the projector) whose output goes to a
log file. The :class:`Supervisor` restarts a child that exits when nobody meant it to (as an
init system would) and keeps every such exit, with its log tail, for the verdict: the faults
are meant to be survived, not restarted away.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from signal import Signals
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """One ``python -m careledger.cli ARGS`` process, restartable, its output in a log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self.process: subprocess.Popen[bytes] | None = None
        self.expected_down = False  # set while a fault or the shutdown holds it down
        self.starts = 0
        # held while deciding "down on purpose or not": the supervisor must never see a
        # child a fault has just signalled as one that died by itself
        self.lock = threading.RLock()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "careledger.cli", *self.args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        self.expected_down = False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: Signals) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def tail(self, chars: int = 2000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def take_down(self, sig: Signals) -> None:
        """Send ``sig`` to bring it down on purpose (the supervisor leaves it down)."""
        with self.lock:
            self.expected_down = True
            self.signal(sig)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (after SIGCONT, in case it is paused) and wait; the exit status."""
        with self.lock:
            self.expected_down = True
            self.signal(signal.SIGCONT)
        self.take_down(signal.SIGTERM)
        return self.wait(timeout) if self.process else None

    def close(self) -> None:
        self.expected_down = True
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@dataclass(frozen=True)
class UnplannedExit:
    """A child that exited while it was meant to be running."""

    name: str
    status: int | None
    at_s: float
    tail: str


class Supervisor:
    """Restarts children that exit unexpectedly, recording each such exit."""

    def __init__(self, children: list[Child], started: float) -> None:
        self.children = children
        self.started = started
        self.exits: list[UnplannedExit] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="supervisor")

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for child in self.children:
                with child.lock:
                    if child.expected_down or child.alive() or child.process is None:
                        continue
                    status = child.process.poll()
                    at = round(time.monotonic() - self.started, 1)
                    self.exits.append(UnplannedExit(child.name, status, at, child.tail()))
                    time.sleep(1.0)  # no tight restart loop while the cause is still there
                    child.start()


class Cluster:
    """A private PostgreSQL cluster (initdb + pg_ctl) on a free port in a temporary directory.

    Run as the ``postgres`` user when we are root (initdb refuses root). ``fsync=off``: the
    soak kills the server's clients and the server itself, never the machine, so the OS cache
    keeps every acknowledged write.
    """

    def __init__(self) -> None:
        self.bin = Cluster.find_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="careledger-soak-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")

    @staticmethod
    def find_bin() -> Path | None:
        found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found or (os.geteuid() == 0 and shutil.which("runuser") is None):
            return None
        return Path(found[-1]).parent

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/soak"

    def _run(self, *args: str, timeout: float = 120) -> None:
        assert self.bin is not None
        command = [*self._as, str(self.bin / args[0]), *args[1:]]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "soak")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
            "-c fsync=off -c max_connections=200"
        )
        log = self.dir / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
