"""A real Prometheus server scrapes two `careledger demo` processes: default traffic and a
heavy-churn clinic. Through Prometheus's HTTP API, every expression of the Grafana dashboard
returns data, and the retention alert fires for the clinic whose 12-month retention is below
20 % and not for the default one.

The alert rules are the deployment's own (ops/prometheus/), loaded by Prometheus itself, with one
change: each alert's ``for`` is set to 0s, because a demo is minutes and the rule waits hours.
The ``for`` durations are covered by the promtool cases (tests/integration/test_prometheus_rules).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from careledger.adapters import prometheus_server as prom

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "careledger.json"
RETENTION_ALERT = "CareledgerProgramRetentionLow"
TRAFFIC = ("default", "heavy")
# 100 patients for 400 days: the first month is the base the last 12 are compared with.
DEMO_ARGS = ("--patients", "100", "--days", "400", "--seed", "7", "--json", "--hold")
DEADLINE = 90.0  # seconds any one wait may take before the test gives up (a hang guard)


@dataclass
class Demo:
    traffic: str
    port: int
    process: subprocess.Popen[bytes]
    stderr: Path

    def held(self) -> bool:
        return "holding:" in self.stderr.read_text(encoding="utf-8", errors="replace")


def _wait_for(what: str, check: Callable[[], Any], demos: list[Demo]) -> Any:
    """``check()``'s first truthy result, polled; fails if a demo dies or it never comes."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for demo in demos:
            if demo.process.poll() is not None:
                pytest.fail(f"the {demo.traffic} demo exited: {demo.stderr.read_text()[-3000:]}")
        result = check()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"gave up waiting for {what}")


def _api(server: prom.PrometheusServer, path: str, **params: str | float) -> Any:
    url = f"{server.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def _fast_rules(directory: Path) -> list[Path]:
    """Copies of the deployment's rules files with every alert's ``for`` set to 0s."""
    copies = []
    for path in prom.rules_files():
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in spec["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "0s"
        copy = directory / path.name
        copy.write_text(yaml.safe_dump(spec), encoding="utf-8")
        copies.append(copy)
    return copies


def _dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[prom.PrometheusServer, dict[str, int]]]:
    binary = prom.find_binary()
    if binary is None:
        pytest.fail(f"prometheus is not installed; {prom.INSTALL_HINT}")
    ports = {traffic: prom.free_port() for traffic in TRAFFIC}
    targets = [
        prom.Target("careledger-demo", f"127.0.0.1:{port}", {"traffic": traffic})
        for traffic, port in ports.items()
    ]
    rules = tmp_path / "rules"
    rules.mkdir()
    configuration = prom.config(targets, _fast_rules(rules), interval_seconds=1.0)
    with prom.PrometheusServer(
        binary, configuration, tmp_path / "prometheus", prom.free_port()
    ) as server:
        yield server, ports


@pytest.fixture
def demos(tmp_path: Path, prometheus: Any) -> Iterator[list[Demo]]:
    _, ports = prometheus
    started = []
    try:
        for traffic, port in ports.items():
            work = tmp_path / traffic
            work.mkdir()
            env = {
                **os.environ,
                "CARELEDGER_DATABASE_URL": f"sqlite:///{work / 'ledger.db'}",
                "CARELEDGER_METRICS_PORT": str(port),
            }
            env.pop("CARELEDGER_KAFKA_BOOTSTRAP", None)
            env.pop("CARELEDGER_LOG_LEVEL", None)
            stderr = work / "stderr.txt"
            with stderr.open("wb") as err:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "careledger.cli",
                        "demo",
                        *DEMO_ARGS,
                        "--churn",
                        traffic,
                    ],
                    env=env,
                    cwd=work,
                    stdout=(work / "stdout.txt").open("wb"),
                    stderr=err,
                )
            started.append(Demo(traffic, port, process, stderr))
        yield started
    finally:
        for demo in started:
            if demo.process.poll() is None:
                demo.process.send_signal(signal.SIGTERM)
        for demo in started:
            try:
                demo.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                demo.process.kill()
                demo.process.wait()


def _retention(server: prom.PrometheusServer) -> dict[str, float]:
    result = _api(server, "query", query="careledger_program_retention_rate")["result"]
    return {sample["metric"]["traffic"]: float(sample["value"][1]) for sample in result}


def _scraped_after(server: prom.PrometheusServer, moment: float) -> float | None:
    """The oldest last-scrape time of the demos, once every demo was scraped after ``moment``."""
    active = _api(server, "targets")["activeTargets"]
    times = [_timestamp(target["lastScrape"]) for target in active]
    healthy = all(target["health"] == "up" for target in active)
    return min(times) if healthy and len(times) == len(TRAFFIC) and min(times) > moment else None


def _evaluated_after(server: prom.PrometheusServer, moment: float) -> bool:
    groups = _api(server, "rules")["groups"]
    return bool(groups) and all(_timestamp(group["lastEvaluation"]) > moment for group in groups)


def _timestamp(text: str) -> float:
    """An RFC 3339 time from Prometheus (nanoseconds, "Z") as a Unix time."""
    seconds, _, fraction = text.removesuffix("Z").partition(".")
    moment = datetime.fromisoformat(seconds).replace(tzinfo=UTC)
    return moment.timestamp() + float(f"0.{fraction or 0}")


def test_prometheus_scrapes_the_demo_and_the_retention_alert_fires_for_heavy_churn(
    prometheus: tuple[prom.PrometheusServer, dict[str, int]], demos: list[Demo]
) -> None:
    server, _ = prometheus
    began = time.time()
    _wait_for(
        "both demos to finish and hold their metrics", lambda: all(d.held() for d in demos), demos
    )
    finished = time.time()

    # Every dashboard panel has data over the run ($__rate_interval as Grafana would size it).
    for expr in _dashboard_expressions():
        query = expr.replace("$__rate_interval", "15s")
        result = _api(server, "query_range", query=query, start=began - 5, end=time.time(), step=1)[
            "result"
        ]
        assert result, f"no data for the dashboard expression {expr}"

    # Wait for a scrape of the final figures, then for a rule evaluation after that scrape.
    scraped = _wait_for(
        "a scrape after the demos finished", lambda: _scraped_after(server, finished), demos
    )
    _wait_for(
        "a rule evaluation after that scrape", lambda: _evaluated_after(server, scraped), demos
    )

    retention = _retention(server)
    assert set(retention) == set(TRAFFIC), retention
    assert retention["heavy"] < 0.20 <= retention["default"], retention

    alerts = _api(server, "alerts")["alerts"]
    firing = {
        alert["labels"]["traffic"]
        for alert in alerts
        if alert["labels"]["alertname"] == RETENTION_ALERT and alert["state"] == "firing"
    }
    assert firing == {"heavy"}, alerts
    series = _api(server, "query", query=f'ALERTS{{alertname="{RETENTION_ALERT}"}}')["result"]
    assert {sample["metric"]["traffic"] for sample in series} == {"heavy"}
