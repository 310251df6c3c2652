"""``careledger fhir-gateway``: FHIR R4 resources from EMRs in, v1 interactions out.

The pseudonym key (``CARELEDGER_PSEUDONYM_KEY``) and the EMR's source
(``CARELEDGER_FHIR_SOURCE``) are required to start; the key is never logged or printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, start_http_server
from pydantic import SecretStr

from careledger.application.programs import load_programs
from careledger.settings import Settings
from consumers.fhir_gateway import FhirGateway
from consumers.fhir_metrics import GatewayMetrics
from consumers.worker import install_signal_handlers
from producers.admin import ensure_topic
from producers.fhir import mapping
from producers.fhir.emr import SimulatedEmr
from producers.fhir.mapping import MappingConfig, Translator
from producers.fhir.pseudonyms import Pseudonyms, WeakPseudonymKey
from schemas.topics import FHIR_DLQ_TOPIC, FHIR_TOPIC, INTERACTIONS_TOPIC

log = logging.getLogger(__name__)


class GatewayConfigError(ValueError):
    """Raised when the settings cannot start the gateway; the message names the variable."""


def register(subparsers: Any) -> None:
    gateway = subparsers.add_parser(
        "fhir-gateway", help="map FHIR R4 resources from careledger.fhir.r4 to v1 interactions"
    )
    gateway.set_defaults(handler=run_gateway)


def _codes(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return default if value is None else tuple(v for v in value.split(",") if v.strip())


def build_translator(settings: Settings) -> Translator:
    """The mapping from settings: source, program (and its time zone), code lists, key."""
    if settings.pseudonym_key is None:
        raise GatewayConfigError("set CARELEDGER_PSEUDONYM_KEY (at least 32 bytes)")
    if not settings.fhir_source:
        raise GatewayConfigError("set CARELEDGER_FHIR_SOURCE (the EMR's CloudEvents source)")
    programs = load_programs([settings.programs_dir] if settings.programs_dir else [])
    program = programs.get(settings.fhir_program_id)
    if program is None:
        wanted = settings.fhir_program_id
        raise GatewayConfigError(f"CARELEDGER_FHIR_PROGRAM_ID: no program {wanted!r} is loaded")
    zone = ZoneInfo(settings.timezone) if settings.timezone else program.timezone
    try:
        config = MappingConfig.from_lists(
            settings.fhir_source,
            settings.fhir_program_id,
            zone,
            specialist=_codes(settings.fhir_specialist_codes, mapping.DEFAULT_SPECIALIST_CODES),
            annual_wellness=_codes(
                settings.fhir_annual_wellness_codes, mapping.DEFAULT_ANNUAL_WELLNESS_CODES
            ),
            dental_cleaning=_codes(
                settings.fhir_dental_cleaning_codes, mapping.DEFAULT_DENTAL_CLEANING_CODES
            ),
            screening=_codes(settings.fhir_screening_codes, mapping.DEFAULT_SCREENING_CODES),
        )
        key = settings.pseudonym_key.get_secret_value().encode("utf-8")
        return Translator(config, Pseudonyms(key, settings.fhir_source))
    except WeakPseudonymKey as exc:
        raise GatewayConfigError(f"CARELEDGER_PSEUDONYM_KEY: {exc}") from None
    except ValueError as exc:
        raise GatewayConfigError(f"CARELEDGER_FHIR_*: {exc}") from None


def build_gateway(settings: Settings, registry: CollectorRegistry) -> FhirGateway:
    """Wire a gateway from settings (also used by ``careledger demo --fhir``)."""
    return FhirGateway(
        build_translator(settings),
        bootstrap=settings.kafka_bootstrap,
        group_id=settings.fhir_consumer_group,
        metrics=GatewayMetrics.create(registry),
        batch_max=min(settings.batch_max, 500),
        batch_wait_ms=settings.batch_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
    )


async def prepare_topics(settings: Settings) -> None:
    """Create the FHIR topic, its dead-letter topic and the interactions topic if missing."""
    for topic in (FHIR_TOPIC, FHIR_DLQ_TOPIC, INTERACTIONS_TOPIC):
        await ensure_topic(settings.kafka_bootstrap, topic, settings.partitions)


def run_gateway(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.kafka_bootstrap:
        print(
            "set CARELEDGER_KAFKA_BOOTSTRAP (start one with `careledger broker`)", file=sys.stderr
        )
        return 2
    registry = CollectorRegistry()
    try:
        gateway = build_gateway(settings, registry)
    except GatewayConfigError as exc:
        print(f"careledger fhir-gateway: {exc}", file=sys.stderr)
        return 2
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=registry)
        log.info("metrics on :%d/metrics", settings.metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await prepare_topics(settings)
        await gateway.run(stop)

    asyncio.run(main())
    return 0


# ------------------------------------------------------------------ careledger demo --fhir
DEMO_SOURCE = "urn:careledger:demo:emr"
# The demo's key when CARELEDGER_PSEUDONYM_KEY is unset: fixed, so a seed's run is the same
# every time. Never use it for real patients.
DEMO_KEY = "careledger-demo-only-pseudonym-key-not-for-production"


class DemoEmr:
    """``careledger demo --fhir``: an EMR publishing a share of the patients' clinical events
    as FHIR resources, and a gateway in this process mapping them (see producers.fhir.emr)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        defaults: dict[str, Any] = {}
        if settings.pseudonym_key is None:
            defaults["pseudonym_key"] = SecretStr(DEMO_KEY)
        if not settings.fhir_source:
            defaults["fhir_source"] = DEMO_SOURCE
        self.settings = settings.model_copy(update=defaults)
        self.gateway = build_gateway(self.settings, registry)
        self.emr = SimulatedEmr(self.gateway.translator.config.zone)
        self.sent = 0
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, stop: asyncio.Event) -> None:
        await prepare_topics(self.settings)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id="careledger-demo-emr",
            enable_idempotence=False,
            acks="all",
            linger_ms=5,
        )
        await self._producer.start()
        self._task = asyncio.create_task(self.gateway.run(stop))

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._task is not None:
            await self._task

    async def divert(
        self, records: AsyncIterator[tuple[str | None, bytes]]
    ) -> AsyncIterator[tuple[str | None, bytes]]:
        """Send the records the EMR owns as FHIR resources; pass the others on."""
        assert self._producer is not None
        pending: list[asyncio.Future[Any]] = []
        async for key, payload in records:
            resource = self.emr.resource(payload)
            if resource is None:
                yield key, payload
                continue
            pending.append(await self._producer.send(FHIR_TOPIC, orjson.dumps(resource)))
            self.sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)

    async def settled(self) -> int:
        """Wait until the gateway has done every resource sent; returns how many more
        interactions it published than resources it received (skips, dead letters: fewer)."""
        while self.gateway.consumed < self.sent:
            if self._task is not None and self._task.done():
                self._task.result()  # the gateway died: say why instead of waiting forever
                raise RuntimeError("the FHIR gateway stopped before it was done")
            await asyncio.sleep(0.1)
        return self.gateway.published - self.sent

    def summary(self) -> dict[str, int]:
        return {"resources": self.sent, "interactions": self.gateway.published}


@contextlib.asynccontextmanager
async def demo_emr(
    settings: Settings, registry: CollectorRegistry, stop: asyncio.Event, *, enabled: bool
) -> AsyncIterator[DemoEmr | None]:
    """A started :class:`DemoEmr` (None unless ``enabled``), stopped on exit after ``stop``."""
    if not enabled:
        yield None
        return
    emr = DemoEmr(settings, registry)
    await emr.start(stop)
    try:
        yield emr
    finally:
        stop.set()
        await emr.stop()
