"""The Prometheus configuration and alert rules, checked and unit-tested by the real promtool.

`promtool check config` and `promtool check rules` load what the compose deployment mounts;
`promtool test rules` runs the cases in ops/prometheus/tests/. Every alert of every rules file
must have a case where it fires and one where it stays quiet: the alert list comes from the
rules files themselves, so a new alert without tests fails here.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from careledger.adapters import prometheus_server

pytestmark = pytest.mark.integration

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
CONFIG = OPS / "prometheus.yml"
RULE_TESTS = sorted((OPS / "tests").glob("*.yml"))


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules_files() -> list[Path]:
    """Every YAML file in ops/prometheus/ that holds rule groups."""
    return [
        path
        for path in sorted(OPS.glob("*.yml"))
        if isinstance(_load(path), dict) and "groups" in _load(path)
    ]


def _alerts(path: Path) -> list[str]:
    return [
        rule["alert"]
        for group in _load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run scripts/install-prometheus.sh")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=OPS)


def test_there_are_rules_and_rule_tests_to_check() -> None:
    assert _rules_files(), "no rules file in ops/prometheus/"
    assert RULE_TESTS, "no promtool test file in ops/prometheus/tests/"


def test_promtool_accepts_the_configuration() -> None:
    result = _run("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_configuration_loads_every_rules_file() -> None:
    named = {(OPS / name).resolve() for name in _load(CONFIG)["rule_files"]}
    assert {path.resolve() for path in _rules_files()} <= named


@pytest.mark.parametrize("path", _rules_files(), ids=lambda path: path.name)
def test_promtool_accepts_the_rules_file(path: Path) -> None:
    result = _run("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda path: path.name)
def test_promtool_rule_unit_tests_pass(path: Path) -> None:
    result = _run("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@dataclass
class _Cases:
    firing: set[str] = field(default_factory=set)
    quiet: set[str] = field(default_factory=set)
    rules_files: set[Path] = field(default_factory=set)


def _cases() -> _Cases:
    """What the promtool test files cover: alerts expected to fire, alerts expected quiet."""
    cases = _Cases()
    for path in RULE_TESTS:
        spec = _load(path)
        cases.rules_files |= {(path.parent / name).resolve() for name in spec["rule_files"]}
        for test in spec["tests"]:
            for check in test.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                (cases.firing if expected else cases.quiet).add(check["alertname"])
    return cases


@pytest.mark.parametrize(
    "alert",
    [alert for path in _rules_files() for alert in _alerts(path)],
)
def test_every_alert_has_a_firing_case_and_a_quiet_case(alert: str) -> None:
    cases = _cases()
    assert alert in cases.firing, f"no promtool case where {alert} fires"
    assert alert in cases.quiet, f"no promtool case where {alert} stays quiet"


def test_every_rules_file_is_loaded_by_a_rule_test() -> None:
    assert {path.resolve() for path in _rules_files()} <= _cases().rules_files


def test_the_demo_and_the_live_test_load_the_rules_the_deployment_loads() -> None:
    deployed = {(OPS / name).resolve() for name in _load(CONFIG)["rule_files"]}
    assert {path.resolve() for path in prometheus_server.rules_files()} == deployed
