"""The deployment files agree with the code.

``docker-compose.yml``, the ``Dockerfile`` and ``ops/`` (Prometheus, alert rules, Grafana) are
parsed and cross-checked against what the code declares: settings fields, CLI subcommands,
the console script, the packages, and the metric names the worker and the projector register.
No Docker engine is needed: nothing here is built or run, except the image's healthcheck
probe, which is run against a local metrics server.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from careledger.application.ledger import ACCEPTED, DUPLICATE, REJECTED
from careledger.cli import build_parser
from careledger.settings import Settings
from consumers.metrics import WorkerMetrics
from projections.metrics import ProjectionMetrics
from schemas.topics import INTERACTIONS_DLQ_RETENTION_MS, INTERACTIONS_DLQ_TOPIC

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"
RETENTION_RULES = ROOT / "ops" / "prometheus" / "alerts-retention.yml"
GRAFANA_PROVISIONING = ROOT / "ops" / "grafana" / "provisioning"
ENV_PREFIX = "CARELEDGER_"

# Series a registry family exposes, by family type (the text exposition format).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Series Prometheus itself records for every scrape target.
SCRAPE_SERIES = frozenset({"up"})
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)


# ------------------------------------------------------------------------------------ loading


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


COMPOSE: dict[str, Any] = _load_yaml(COMPOSE_FILE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# careledger services are the ones built from this repository's Dockerfile.
CARELEDGER_SERVICES = sorted(name for name, spec in SERVICES.items() if "build" in spec)


def _interpolate(value: Any) -> str:
    """Compose variable substitution as on a machine with no variables set: the defaults."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return match.group("default") or ""

    pattern = r"\$\$|\$\{\w+(?::?[-?](?P<default>[^}]*))?\}|\$\w+"
    return re.sub(pattern, replace, str(value))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: _interpolate(value) for key, value in raw.items()}


def _settings(service: dict[str, Any]) -> Settings:
    """The settings a service's environment yields (validated; unset fields take defaults)."""
    env = _environment(service)
    values = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if _is_setting(k)}
    return Settings.model_validate(values)


def _is_setting(name: str) -> bool:
    return name.startswith(ENV_PREFIX)


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """``{dependency: condition}`` from either form of ``depends_on``."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


# ------------------------------------------------------------------------------ compose parts


@dataclass(frozen=True)
class PortMapping:
    """One ``ports`` entry of a service."""

    host_ip: str
    host_port: str
    container_port: int


def _ports(service: dict[str, Any]) -> list[PortMapping]:
    mappings = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            host_ip, host = entry.get("host_ip", ""), str(entry.get("published", ""))
            mappings.append(PortMapping(host_ip, host, int(entry["target"])))
            continue
        parts = _interpolate(entry).split("/")[0].split(":")
        parts = ["", "", *parts][-3:]
        mappings.append(PortMapping(parts[0], parts[1], int(parts[2])))
    return mappings


@dataclass(frozen=True)
class Mount:
    """One ``volumes`` entry of a service: a bind mount (``source`` is a host path) or not."""

    source: str
    target: str
    bind: bool


def _mounts(service: dict[str, Any]) -> list[Mount]:
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            bind = entry.get("type") == "bind"
            mounts.append(Mount(str(entry.get("source", "")), entry["target"], bind))
            continue
        parts = _interpolate(entry).split(":")
        if len(parts) == 1:  # an anonymous volume
            continue
        bind = parts[0].startswith((".", "/", "~"))
        mounts.append(Mount(parts[0], parts[1], bind))
    return mounts


def _repo_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository path a bind mount shows at ``container_path`` (None when none does)."""
    wanted = PurePosixPath(container_path)
    for mount in _mounts(service):
        target = PurePosixPath(mount.target)
        if mount.bind and (wanted == target or target in wanted.parents):
            return (ROOT / mount.source / wanted.relative_to(target)).resolve()
    return None


def _command(service: dict[str, Any]) -> list[str]:
    """The arguments the image's ENTRYPOINT receives (the Dockerfile's CMD when unset)."""
    command = service.get("command")
    if command is None:
        return _exec_form(_final_stage(), "CMD")
    if isinstance(command, str):
        return shlex.split(_interpolate(command))
    return [_interpolate(arg) for arg in command]


def _services_with_image(prefix: str) -> list[str]:
    return [name for name, spec in SERVICES.items() if spec.get("image", "").startswith(prefix)]


def _service_for_host(host: str) -> str | None:
    """The compose service reachable as ``host`` on the compose network."""
    for name, spec in SERVICES.items():
        if host in (name, spec.get("hostname")):
            return name
    return None


# ------------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


def _dockerfile() -> list[Instruction]:
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in _dockerfile():
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _final_stage() -> list[Instruction]:
    return _stages()[-1]


def _exec_form(stage: list[Instruction], keyword: str) -> list[str]:
    """The last ``keyword`` of a stage, which must be in exec (JSON) form."""
    found = [i.arguments for i in stage if i.keyword == keyword]
    assert found, f"the final Dockerfile stage has no {keyword}"
    value = json.loads(found[-1])
    assert isinstance(value, list), f"{keyword} must be in exec form"
    return value


@dataclass(frozen=True)
class Copy:
    """A COPY: its sources (in the build context or another stage) and its destination."""

    sources: tuple[str, ...]
    destination: str
    from_stage: bool


def _copies(stage: list[Instruction]) -> list[Copy]:
    copies = []
    for instruction in stage:
        if instruction.keyword != "COPY":
            continue
        args = instruction.arguments
        tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
        flags = [t for t in tokens if t.startswith("--")]
        paths = [t for t in tokens if not t.startswith("--")]
        from_stage = any(flag.startswith("--from=") for flag in flags)
        copies.append(Copy(tuple(paths[:-1]), paths[-1], from_stage))
    return copies


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (``**`` spans directories, ``*`` does not)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out)


def _ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (or a directory above it) out of the context."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in _dockerignore_patterns():
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


# --------------------------------------------------------------------------------- Prometheus


def _prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = _load_yaml(PROMETHEUS_CONFIG)
    return config


def _rule_files() -> list[Path]:
    """Every rule file prometheus.yml names, resolved (and globbed) next to the config."""
    files: list[Path] = []
    for pattern in _prometheus_config().get("rule_files") or []:
        matches = sorted(PROMETHEUS_CONFIG.parent.glob(pattern))
        files.extend(matches or [PROMETHEUS_CONFIG.parent / pattern])
    return files


def _alert_rules() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every rule of the rule files that exist (a missing one fails its own test)."""
    for path in filter(Path.is_file, _rule_files()):
        for group in _load_yaml(path)["groups"]:
            for rule in group["rules"]:
                yield path, rule


def _scrape_jobs() -> dict[str, list[str]]:
    """``{job_name: [host:port, ...]}`` from the static scrape configs."""
    jobs: dict[str, list[str]] = {}
    for job in _prometheus_config()["scrape_configs"]:
        targets = jobs.setdefault(job["job_name"], [])
        for static in job.get("static_configs") or []:
            targets.extend(static["targets"])
    return jobs


@functools.cache
def _known_series() -> frozenset[str]:
    """Every series name the worker and the projector can expose, plus Prometheus's own."""
    names = set(SCRAPE_SERIES)
    worker, projector = CollectorRegistry(), CollectorRegistry()
    WorkerMetrics.create(worker)
    ProjectionMetrics(projector)
    for registry in (worker, projector):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in SERIES_SUFFIXES[family.type]}
    return frozenset(names)


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(grouping, " ", text, flags=re.IGNORECASE)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    identifiers = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()", text)
    return {name for name in identifiers if name.lower() not in PROMQL_KEYWORDS}


def _label_values(expr: str, label: str) -> set[str]:
    """Values a PromQL expression compares ``label`` with (regex alternatives split)."""
    values: set[str] = set()
    for op, value in re.findall(rf'\b{label}\s*(=~|!~|!=|=)\s*"([^"]*)"', expr):
        values |= set(value.split("|")) if "~" in op else {value}
    return values


# --------------------------------------------------------------------------------- Grafana


def _grafana() -> dict[str, Any]:
    (name,) = _services_with_image("grafana/grafana")
    return SERVICES[name]


def _datasources() -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = []
    for path in sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml")):
        sources.extend(_load_yaml(path)["datasources"])
    return sources


def _dashboard_files() -> list[Path]:
    files: list[Path] = []
    for path in sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml")):
        for provider in _load_yaml(path)["providers"]:
            folder = _repo_path(_grafana(), provider["options"]["path"])
            assert folder is not None, f"{provider['options']['path']} is not mounted in Grafana"
            files.extend(sorted(folder.glob("*.json")))
    return files


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    for path in _dashboard_files():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in _panels(dashboard["panels"]):
            for target in panel.get("targets") or []:
                yield f"{path.name}: {panel['title']}", target["expr"]


def _alert_exprs() -> Iterator[tuple[str, str]]:
    for path, rule in _alert_rules():
        yield f"{path.name}: {rule['alert']}", str(rule["expr"])


# ============================================================================ compose: basics


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_an_image_or_a_build(name: str) -> None:
    service = SERVICES[name]
    assert service.get("image") or service.get("build"), f"{name} has neither image nor build"


def test_careledger_services_are_built_from_this_repository() -> None:
    assert {"worker-1", "worker-2", "projector", "simulator"} <= set(CARELEDGER_SERVICES)
    for name in CARELEDGER_SERVICES:
        build = SERVICES[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (ROOT / context).resolve() == ROOT, f"{name} builds from {context}"
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_mounted_path_exists(name: str) -> None:
    declared_volumes = set(COMPOSE.get("volumes") or {})
    for mount in _mounts(SERVICES[name]):
        if mount.bind:
            assert (ROOT / mount.source).exists(), f"{name} mounts missing {mount.source}"
        else:
            assert mount.source in declared_volumes, f"{name}: volume {mount.source} undeclared"


def test_dependencies_exist_and_health_conditions_have_a_healthcheck() -> None:
    image_checks = any(i.keyword == "HEALTHCHECK" for i in _final_stage())
    for name, service in SERVICES.items():
        for dependency, condition in _depends_on(service).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            target = SERVICES[dependency]
            assert not target.get("profiles") or service.get("profiles"), (
                f"{name} starts by default but depends on {dependency}, which is in a profile"
            )
            if condition != "service_healthy":
                continue
            check = target.get("healthcheck")
            has_check = check is not None or ("build" in target and image_checks)
            assert has_check and not (check or {}).get("disable"), (
                f"{name} waits for {dependency} to be healthy; it has no healthcheck"
            )


def test_no_two_services_publish_the_same_host_port() -> None:
    published = [
        (mapping.host_ip, mapping.host_port)
        for service in SERVICES.values()
        for mapping in _ports(service)
        if mapping.host_port
    ]
    assert len(published) == len(set(published)), published


# ============================================================== compose: careledger services


def test_every_careledger_variable_is_a_settings_field() -> None:
    allowed = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    for name, service in SERVICES.items():
        unknown = {key for key in _environment(service) if _is_setting(key)} - allowed
        assert not unknown, f"{name} sets variables Settings does not read: {sorted(unknown)}"


@pytest.mark.parametrize("name", CARELEDGER_SERVICES)
def test_careledger_service_settings_validate_and_name_database_and_kafka(name: str) -> None:
    env = _environment(SERVICES[name])
    assert env.get(f"{ENV_PREFIX}DATABASE_URL"), f"{name} has no CARELEDGER_DATABASE_URL"
    assert env.get(f"{ENV_PREFIX}KAFKA_BOOTSTRAP"), f"{name} has no CARELEDGER_KAFKA_BOOTSTRAP"
    _settings(SERVICES[name])  # raises on a value Settings would refuse


@pytest.mark.parametrize("name", CARELEDGER_SERVICES)
def test_database_url_matches_the_postgres_service(name: str) -> None:
    url = urlsplit(_settings(SERVICES[name]).database_url)
    assert url.scheme.startswith("postgresql"), f"{name} is not on PostgreSQL"
    postgres_name = _service_for_host(url.hostname or "")
    assert postgres_name is not None, f"{name}: no service is called {url.hostname}"
    postgres = _environment(SERVICES[postgres_name])
    assert SERVICES[postgres_name]["image"].startswith("postgres:")
    assert (url.port or 5432) == 5432
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == postgres.get("POSTGRES_DB", postgres["POSTGRES_USER"])


@pytest.mark.parametrize("name", CARELEDGER_SERVICES)
def test_careledger_command_parses(name: str) -> None:
    service = SERVICES[name]
    assert "entrypoint" not in service, f"{name} must keep the image's careledger ENTRYPOINT"
    argv = _command(service)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{name}: `careledger {shlex.join(argv)}` does not parse")
    assert callable(args.handler)


def test_the_compose_file_runs_the_whole_system() -> None:
    commands = {name: _command(SERVICES[name])[:2] for name in CARELEDGER_SERVICES}
    workers = [name for name, argv in commands.items() if argv[:1] == ["worker"]]
    assert len(workers) >= 2, "two ledger workers share the partitions"
    assert ["projections", "run"] in commands.values()
    simulators = [name for name, argv in commands.items() if argv[:1] == ["simulate"]]
    assert simulators, "the demo profile runs the simulator"
    for name in simulators:
        assert "demo" in SERVICES[name].get("profiles", [])
        assert "--rate" in _command(SERVICES[name])


@pytest.mark.parametrize("name", CARELEDGER_SERVICES)
def test_mapped_ports_are_the_metrics_port(name: str) -> None:
    port = _settings(SERVICES[name]).metrics_port
    for mapping in _ports(SERVICES[name]):
        assert port != 0, f"{name} maps {mapping.container_port} with metrics off"
        assert mapping.container_port == port, (
            f"{name} maps container port {mapping.container_port}; "
            f"its CARELEDGER_METRICS_PORT is {port}"
        )


# ============================================================================ compose: Kafka


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``{listener name: (host, port)}`` from a Kafka listeners property."""
    found = re.findall(r"(\w+)://([^:,]*):(\d+)", value)
    return {name: (host, int(port)) for name, host, port in found}


@pytest.mark.parametrize("name", CARELEDGER_SERVICES)
def test_kafka_bootstrap_names_a_listener_the_kafka_service_declares(name: str) -> None:
    for address in _settings(SERVICES[name]).kafka_bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        kafka_name = _service_for_host(host)
        assert kafka_name is not None, f"{name}: no service is called {host}"
        kafka = _environment(SERVICES[kafka_name])
        advertised = _listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
        matching = [n for n, hp in advertised.items() if hp == (host, int(port))]
        assert matching, f"{name}: {kafka_name} advertises no listener at {address}"
        listener = matching[0]
        assert listener != kafka["KAFKA_CONTROLLER_LISTENER_NAMES"], "that is the controller"
        assert _listeners(kafka["KAFKA_LISTENERS"])[listener][1] == int(port), (
            f"{kafka_name} advertises {address} but listens on another port for {listener}"
        )


def test_kafka_is_a_single_kraft_node() -> None:
    # (the dlq-retention job runs the same image's tools against it)
    (name,) = [n for n in _services_with_image("apache/kafka:") if n != "dlq-retention"]
    env = _environment(SERVICES[name])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = _listeners(env["KAFKA_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voter = f"{env['KAFKA_NODE_ID']}@{name}:{listeners[controller][1]}"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voter
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols), "every listener needs a security protocol"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    assert set(_listeners(env["KAFKA_ADVERTISED_LISTENERS"])) <= set(listeners)
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_the_dead_letter_topic_retention_is_the_documented_erasure_bound() -> None:
    """The DLQ keeps original bytes, so its retention bounds how long a refused record of
    an erased patient survives (ADR 0015); both workers wait for the job that sets it."""
    job = SERVICES["dlq-retention"]
    script = " ".join(job["command"])
    setting = f"retention.ms={INTERACTIONS_DLQ_RETENTION_MS}"
    assert script.count(setting) == 2  # on creation, and re-set on an existing topic
    assert script.count(INTERACTIONS_DLQ_TOPIC) == 2
    for name in ("worker-1", "worker-2"):
        condition = _depends_on(SERVICES[name])["dlq-retention"]
        assert condition == "service_completed_successfully"
    adr = (ROOT / "docs" / "adr" / "0015-erasure-by-crypto-shredding.md").read_text()
    assert "7 days" in adr and INTERACTIONS_DLQ_TOPIC in adr


# =============================================================================== Prometheus


def test_prometheus_loads_this_configuration() -> None:
    (name,) = _services_with_image("prom/prometheus")
    service = SERVICES[name]
    flags = dict(arg.split("=", 1) for arg in service["command"] if "=" in arg)
    assert _repo_path(service, flags["--config.file"]) == PROMETHEUS_CONFIG.resolve()


def test_prometheus_scrapes_every_careledger_metrics_endpoint() -> None:
    scraped: set[str] = set()
    for job, targets in _scrape_jobs().items():
        for target in targets:
            host, _, port = target.rpartition(":")
            assert host in SERVICES, f"job {job} scrapes {host}, which is not a service"
            if host in CARELEDGER_SERVICES:
                expected = _settings(SERVICES[host]).metrics_port
                assert int(port) == expected, f"{target}: {host} serves metrics on {expected}"
            scraped.add(host)
    serving = {n for n in CARELEDGER_SERVICES if _settings(SERVICES[n]).metrics_port}
    assert serving <= scraped, f"not scraped: {sorted(serving - scraped)}"


@pytest.mark.parametrize("path", _rule_files(), ids=lambda path: path.name)
def test_rule_file_exists_and_is_valid(path: Path) -> None:
    assert path.is_file(), f"prometheus.yml names {path.name}, which does not exist"
    document = _load_yaml(path)
    assert document["groups"], f"{path.name} has no groups"
    for group in document["groups"]:
        assert group.get("name"), f"{path.name}: a group has no name"
        assert group["rules"], f"{path.name}: group {group['name']} has no rules"
        for rule in group["rules"]:
            assert rule.get("alert") and rule.get("expr"), f"{path.name}: {rule}"


def test_alert_names_are_unique_and_the_retention_rules_are_loaded() -> None:
    assert RETENTION_RULES.resolve() in {path.resolve() for path in _rule_files()}
    names = [rule["alert"] for _, rule in _alert_rules()]
    assert len(names) == len(set(names)), names


def test_alert_expressions_use_only_metrics_the_code_defines() -> None:
    for where, expr in _alert_exprs():
        names = _metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= _known_series(), f"{where}: unknown {sorted(names - _known_series())}"


def test_alerts_cover_lag_dead_letters_projection_lag_and_retention() -> None:
    used = set().union(*(_metric_names(expr) for _, expr in _alert_exprs()))
    assert "careledger_consumer_lag_records" in used
    assert used & {"careledger_projection_lag_seconds", "careledger_projection_lag_events"}
    assert "careledger_program_retention_rate" in used, "no retention alert is loaded"
    dead_letters = [e for _, e in _alert_exprs() if REJECTED in _label_values(e, "outcome")]
    assert any("careledger_messages_total" in _metric_names(e) for e in dead_letters)


def test_label_values_in_expressions_are_real() -> None:
    outcomes, jobs = {ACCEPTED, DUPLICATE, REJECTED}, set(_scrape_jobs())
    for where, expr in [*_alert_exprs(), *_dashboard_exprs()]:
        assert _label_values(expr, "outcome") <= outcomes, f"{where}: outcome in {expr!r}"
        assert _label_values(expr, "job") <= jobs, f"{where}: job in {expr!r}"


# ================================================================================== Grafana


def test_grafana_mounts_its_provisioning() -> None:
    provisioning = _repo_path(_grafana(), "/etc/grafana/provisioning")
    assert provisioning == GRAFANA_PROVISIONING.resolve()
    assert _dashboard_files(), "no dashboard is provisioned"


def test_grafana_datasource_is_the_prometheus_service() -> None:
    (prometheus,) = _services_with_image("prom/prometheus")
    sources = _datasources()
    assert [s["type"] for s in sources] == ["prometheus"]
    url = urlsplit(sources[0]["url"])
    assert url.hostname == prometheus and url.port == 9090


def test_dashboard_panels_use_only_metrics_the_code_defines() -> None:
    uids = {source["uid"] for source in _datasources()}
    for path in _dashboard_files():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        panels = list(_panels(dashboard["panels"]))
        assert len({p["id"] for p in panels}) == len(panels), f"{path.name}: duplicate ids"
        for panel in panels:
            assert panel["datasource"]["uid"] in uids, f"{panel['title']}: unknown datasource"
    for where, expr in _dashboard_exprs():
        names = _metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= _known_series(), f"{where}: unknown {sorted(names - _known_series())}"


def test_dashboard_shows_what_operators_need() -> None:
    used = set().union(*(_metric_names(expr) for _, expr in _dashboard_exprs()))
    assert {
        "careledger_messages_total",
        "careledger_batch_commit_seconds_bucket",
        "careledger_consumer_lag_records",
        "careledger_projection_lag_seconds",
        "careledger_program_retention_rate",
        "careledger_ledger_points_total",
    } <= used


# =============================================================================== Dockerfile


def test_dockerfile_runs_the_console_script_as_a_non_root_user() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    cli = [name for name, target in scripts.items() if target == f"{build_parser.__module__}:main"]
    stage = _final_stage()
    assert cli and _exec_form(stage, "ENTRYPOINT") == cli, f"console scripts: {scripts}"
    build_parser().parse_args(_exec_form(stage, "CMD"))
    users = [i.arguments for i in stage if i.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the service runs as root"
    exposed = {port for i in stage if i.keyword == "EXPOSE" for port in i.arguments.split()}
    assert str(Settings.model_fields["metrics_port"].default) in exposed


def test_dockerfile_installs_the_package_on_python_311_slim() -> None:
    stages = _stages()
    for stage in stages:
        image = stage[0].arguments.split()[0]
        assert image == "python:3.11-slim", f"base image {image}"
    runs = [i.arguments for stage in stages for i in stage if i.keyword == "RUN"]
    assert any(re.search(r"\bpip install (?:\S+ )*\.(?:\s|$)", run) for run in runs)


def test_dockerfile_copies_every_package_and_dockerignore_keeps_them() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        path.name
        for path in ROOT.iterdir()
        if (path / "__init__.py").is_file() and any(fnmatch.fnmatch(path.name, p) for p in patterns)
    }
    copied = [
        src for stage in _stages() for c in _copies(stage) if not c.from_stage for src in c.sources
    ]
    top_level = {PurePosixPath(src).parts[0] for src in copied}
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= top_level
    for source in copied:
        assert not _ignored(source), f".dockerignore excludes {source}, which the image needs"
    for local_state in (".venv", ".careledger", ".git", "tests"):
        assert _ignored(local_state), f".dockerignore lets {local_state} into the context"


def test_healthcheck_runs_the_probe_the_image_copies() -> None:
    (check,) = [i.arguments for i in _final_stage() if i.keyword == "HEALTHCHECK"]
    command = json.loads(check.split(" CMD ", 1)[1])
    destinations = {c.destination: c.sources for c in _copies(_final_stage()) if not c.from_stage}
    assert command[0] == "python"
    assert destinations[command[1]] == ("ops/docker/healthcheck.py",)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _probe(port: int) -> int:
    env = {**os.environ, f"{ENV_PREFIX}METRICS_PORT": str(port)}
    script = ROOT / "ops" / "docker" / "healthcheck.py"
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, timeout=30, check=False
    )
    return result.returncode


def test_healthcheck_probe_reports_metrics_up_down_and_off() -> None:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=CollectorRegistry())
    try:
        assert _probe(server.server_port) == 0
    finally:
        server.shutdown()
        thread.join()
    assert _probe(_free_port()) == 1
    assert _probe(0) == 0
