"""The soak's nemesis: a fault schedule drawn from the seed, and the hand that injects it.

The schedule is a pure function of (seed, minutes, what this machine allows), so a failing seed
replays the same faults at the same offsets. Every kind comes once in a shuffled first round
(a run always exercises all of them), then kinds are drawn at random. Faults run one after the
other; each holds its damage for a seeded duration, then undoes it. The first stretch of a run
(group joins) and the last (so the drain starts from a quiet system) are left alone.

Duplicates, late redeliveries and poison records are faults of the *traffic*
(``bench.soak_traffic``); the schedule's summary counts them beside these.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psycopg

from bench.soak_processes import Child, Cluster

WORKER_FAULTS = ("worker_kill9", "worker_sigterm", "worker_pause")
KINDS = (
    *WORKER_FAULTS,
    "projector_kill9",
    "pg_terminate_backends",
    "pg_restart",
    "broker_pause",
)
QUIET_START_S = 25.0
QUIET_END_S = 15.0


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: when (seconds into the run), what, on which worker, how long."""

    at_s: float
    kind: str
    target: int = 0  # the worker, for worker faults
    hold_s: float = 0.0  # how long the damage lasts before it is undone
    mode: str = ""  # pg_restart: the pg_ctl stop mode


def schedule(seed: int, seconds: float, workers: int, kinds: tuple[str, ...]) -> list[Fault]:
    """The faults of a run of ``seconds``, drawn from ``seed`` (a separate stream from the
    traffic's, so changing the rate never moves a fault)."""
    rng = random.Random(f"faults-{seed}")
    span = max(seconds - QUIET_START_S - QUIET_END_S, 1.0)
    count = max(len(kinds), int(span / 14))
    first = list(kinds)
    rng.shuffle(first)
    drawn = first + [rng.choice(kinds) for _ in range(count - len(first))]
    step = span / count
    out = []
    for index, kind in enumerate(drawn):
        at = QUIET_START_S + index * step + rng.uniform(0, step * 0.3)
        out.append(
            Fault(
                round(at, 1),
                kind,
                target=rng.randrange(workers),
                hold_s=round(rng.uniform(*_HOLD.get(kind, (0.5, 2.0))), 1),
                mode=rng.choice(("fast", "immediate")) if kind == "pg_restart" else "",
            )
        )
    return out


# seconds each fault keeps its damage; a pause outlasts the 3 s session timeout
_HOLD = {"worker_pause": (4.5, 7.0), "pg_restart": (1.0, 4.0), "broker_pause": (2.0, 6.0)}


@dataclass
class Injected:
    """A fault as it happened: the plan, when it really started, how long it took."""

    fault: Fault
    started_s: float
    took_s: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.note.startswith("failed")

    def summary(self) -> dict[str, object]:
        return {**asdict(self.fault), "started_s": self.started_s, "took_s": self.took_s}


class Nemesis:
    """Injects a schedule against the running system from a thread of its own."""

    def __init__(
        self,
        faults: list[Fault],
        workers: list[Child],
        projector: Child,
        broker_pid: int,
        cluster: Cluster | None,
        database_url: str,
        started: float,
    ) -> None:
        self.faults, self.workers, self.projector = faults, workers, projector
        self.broker_pid, self.cluster, self.url = broker_pid, cluster, database_url
        self.started = started
        self.done: list[Injected] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="nemesis")

    def __enter__(self) -> Nemesis:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def join(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until every scheduled fault was injected and undone."""
        self._thread.join(max(0.0, timeout))

    def _run(self) -> None:
        for fault in self.faults:
            wait = self.started + fault.at_s - time.monotonic()
            if self._stop.wait(max(0.0, wait)):
                return
            began = time.monotonic()
            try:
                note = self._inject(fault)
            except Exception as error:  # a fault that could not be injected is reported
                note = f"failed: {type(error).__name__}: {error}"
                self.errors.append(f"{fault.kind} at {fault.at_s}s {note}")
            self.done.append(
                Injected(
                    fault,
                    round(began - self.started, 1),
                    round(time.monotonic() - began, 1),
                    note,
                )
            )

    def _inject(self, fault: Fault) -> str:
        handlers: dict[str, Callable[[Fault], str]] = {
            "worker_kill9": lambda f: _restart(self.workers[f.target], signal.SIGKILL, f.hold_s),
            "worker_sigterm": lambda f: _restart(self.workers[f.target], signal.SIGTERM, f.hold_s),
            "worker_pause": lambda f: _pause(self.workers[f.target].signal, f.hold_s),
            "projector_kill9": lambda f: _restart(self.projector, signal.SIGKILL, f.hold_s),
            "pg_terminate_backends": lambda f: self._terminate_backends(),
            "pg_restart": self._pg_restart,
            "broker_pause": lambda f: _pause(lambda sig: os.kill(self.broker_pid, sig), f.hold_s),
        }
        return handlers[fault.kind](fault)

    def _terminate_backends(self) -> str:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            ).fetchall()
        return f"{len(rows)} connections terminated"

    def _pg_restart(self, fault: Fault) -> str:
        assert self.cluster is not None
        self.cluster.stop(fault.mode)
        time.sleep(fault.hold_s)
        self.cluster.start()
        return f"stopped ({fault.mode}) {fault.hold_s}s"


def _restart(child: Child, sig: signal.Signals, hold_s: float) -> str:
    """Signal ``child``, wait for it to exit, keep it down ``hold_s``, start it again."""
    child.take_down(sig)
    status = child.wait(40)
    if status is None:  # a SIGTERM it did not honour in time is a finding; kill to go on
        child.signal(signal.SIGKILL)
        child.wait(10)
    time.sleep(hold_s)
    child.start()
    return f"exit status {status}"


def _pause(send: Callable[[signal.Signals], None], hold_s: float) -> str:
    send(signal.SIGSTOP)
    try:
        time.sleep(hold_s)
    finally:
        send(signal.SIGCONT)
    return f"paused {hold_s}s"
