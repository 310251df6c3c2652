"""A local Prometheus server beside careledger processes: for ``careledger demo --prometheus``
and for the live test (tests/e2e/test_prometheus_live.py), which share this code.

It runs Debian's ``prometheus`` binary (``scripts/install-prometheus.sh`` installs it) on
127.0.0.1 with a data directory of its own and a generated configuration: one scrape job per
careledger process and the alert rules of ``ops/prometheus/``. The configuration is written as
JSON, which is YAML too, so nothing beyond the standard library is needed to write it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

OPS_DIR = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
INSTALL_HINT = "install it with: sudo bash scripts/install-prometheus.sh (Debian's prometheus)"
READY_TIMEOUT = 60.0  # seconds a starting server may take before it is given up on


class PrometheusFailed(RuntimeError):
    """Raised when the Prometheus server exits or never becomes ready."""


@dataclass(frozen=True)
class Target:
    """One careledger process to scrape: its job name, ``host:port`` and extra labels."""

    job: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


def find_binary() -> str | None:
    """The ``prometheus`` executable on PATH, if it is installed."""
    return shutil.which("prometheus")


def rules_files(directory: Path = OPS_DIR) -> list[Path]:
    """The alert rules the deployment loads: every ``alerts*.yml`` in ``ops/prometheus/``."""
    return sorted(directory.glob("alerts*.yml"))


def free_port() -> int:
    """A TCP port nobody listens on at the moment of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def config(
    targets: Sequence[Target], rule_files: Sequence[Path], interval_seconds: float = 1.0
) -> dict[str, Any]:
    """A Prometheus configuration scraping ``targets`` and evaluating ``rule_files``."""
    interval = f"{round(interval_seconds * 1000)}ms"
    jobs: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        jobs.setdefault(target.job, []).append(
            {"targets": [target.address], "labels": dict(target.labels)}
        )
    return {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"system": "careledger"},
        },
        "rule_files": [str(path.resolve()) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": static} for job, static in jobs.items()
        ],
    }


class PrometheusServer:
    """A running ``prometheus`` process; a context manager that stops it on exit.

    Its configuration, its TSDB and its log live in ``directory``.
    """

    def __init__(
        self,
        binary: str,
        configuration: Mapping[str, Any],
        directory: Path,
        port: int,
    ) -> None:
        self.binary, self.configuration, self.directory = binary, configuration, directory
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = directory / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Write the configuration, start the server and wait until it is ready."""
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / "prometheus.yml"
        config_path.write_text(json.dumps(self.configuration, indent=2), encoding="utf-8")
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-characters:]
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise PrometheusFailed(f"prometheus exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusFailed(f"prometheus was not ready in {READY_TIMEOUT:.0f} s")
