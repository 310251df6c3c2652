"""``simulate``: deterministic program traffic, to the interactions topic or a JSON-lines file.

``--program`` picks the program's traffic profile (``producers.profiles``; clinic-default's
traffic is what it always was) and ``--churn`` its population.

Records go to Kafka exactly as the simulator made them, malformed ones included, through the
publisher's unvalidated raw path: exercising the ledger's dead-letter path is the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any, BinaryIO

from careledger.settings import Settings
from producers.admin import TopicSetupFailed, ensure_topic
from producers.habits import POPULATIONS
from producers.pacing import Pacer, Tally
from producers.profiles import PROFILES, profile_for
from producers.publisher import InteractionPublisher, PublishFailed, RawRecord
from producers.simulator import SimulatedEvent, simulate
from schemas.topics import INTERACTIONS_TOPIC

logger = logging.getLogger(__name__)

DEFAULT_START = date(2026, 1, 1)


def register(subparsers: Any) -> None:
    sim = subparsers.add_parser(
        "simulate",
        help="generate realistic program traffic (to Kafka, or a JSON-lines file)",
        description=(
            "Stream a program's deterministic traffic, malformed records and re-sends included. "
            "Without --output it publishes to CARELEDGER_KAFKA_BOOTSTRAP (a broker started by "
            "`careledger broker` or `careledger demo`). The last stdout line is a JSON "
            "summary (on stderr when --output is -)."
        ),
    )
    sim.add_argument("--patients", type=_positive, default=2000, help="default 2000")
    sim.add_argument("--days", type=_positive, default=365, help="default 365")
    sim.add_argument("--seed", type=int, default=42, help="same seed, same bytes (default 42)")
    sim.add_argument(
        "--program",
        choices=sorted(PROFILES),
        default="clinic-default",
        help="whose patients: the program's events carry its programid (default clinic-default)",
    )
    sim.add_argument(
        "--churn",
        choices=sorted(POPULATIONS),
        default="default",
        help="heavy: nearly every patient leaves within weeks (retention below 20 %%)",
    )
    sim.add_argument(
        "--start", type=_day, default=DEFAULT_START, help="first day, YYYY-MM-DD (2026-01-01)"
    )
    sim.add_argument(
        "--rate", type=_rate, default=0.0, help="records per second; 0 = as fast as possible"
    )
    sim.add_argument("--output", metavar="FILE", help="write JSON lines here; - for stdout")
    sim.add_argument(
        "--payers",
        action="store_true",
        help="simulate a US payer mix (payer classes, coverage changes) so the program's payer "
        "rules decide some redemptions and referrals (clinic-default; off: the usual traffic)",
    )
    sim.add_argument("--malformed-share", type=_share, default=0.005, help="default 0.005")
    sim.add_argument("--duplicate-share", type=_share, default=0.01, help="default 0.01")
    sim.set_defaults(handler=run_simulate)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a date written YYYY-MM-DD") from None


def _rate(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 (unpaced) or a positive number")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 0.5:
        raise argparse.ArgumentTypeError("must be between 0 and 0.5")
    return value


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Generate, send or write, then report counts by kind and type and the throughput."""
    try:
        profile = profile_for(args.program, args.payers)
    except ValueError as exc:
        logger.error("simulate: %s", exc)
        return 2
    events = simulate(
        args.patients,
        args.days,
        args.seed,
        args.start,
        malformed_share=args.malformed_share,
        duplicate_share=args.duplicate_share,
        population=profile.populations[args.churn],
        profile=profile,
    )
    tally, pacer = Tally(), Pacer(args.rate)
    if args.output is None and not settings.kafka_bootstrap:
        logger.error(
            "simulate: CARELEDGER_KAFKA_BOOTSTRAP is empty. Start a broker with `careledger "
            "broker` (or `careledger demo`) and point the variable at it, or pass --output FILE."
        )
        return 2
    try:
        if args.output is not None:
            sink = _write(args.output, events, tally, pacer)
        else:
            sink = asyncio.run(_publish(settings, events, tally, pacer))
    except (PublishFailed, TopicSetupFailed) as exc:
        logger.error("simulate: %s", exc)
        return 1
    except KeyboardInterrupt:
        logger.warning("simulate: interrupted; the counts below are what was sent")
        _report(tally.summary(interrupted=True), args.output)
        return 130
    _report(tally.summary(sink=sink), args.output)
    return 0


def _report(summary: dict[str, Any], output: str | None) -> None:
    print(json.dumps(summary), file=sys.stderr if output == "-" else sys.stdout)


def _write(path: str, events: Iterator[SimulatedEvent], tally: Tally, pacer: Pacer) -> str:
    if path == "-":
        _write_lines(sys.stdout.buffer, events, tally, pacer)
        sys.stdout.flush()
        return "stdout"
    with open(path, "wb") as stream:
        _write_lines(stream, events, tally, pacer)
    return path


def _write_lines(
    stream: BinaryIO, events: Iterator[SimulatedEvent], tally: Tally, pacer: Pacer
) -> None:
    for event in events:
        if delay := pacer.wait():
            stream.flush()  # a paced stream is being watched: let the reader see each line
            time.sleep(delay)
        tally.count(event)
        stream.write(event.payload + b"\n")


async def _publish(
    settings: Settings, events: Iterator[SimulatedEvent], tally: Tally, pacer: Pacer
) -> str:
    # Create the topic before the producer asks for its metadata, or Tansu auto-creates it
    # with its own default partition count.
    await ensure_topic(settings.kafka_bootstrap, INTERACTIONS_TOPIC, settings.partitions)
    async with InteractionPublisher(
        settings.kafka_bootstrap, client_id="careledger-simulate"
    ) as publisher:
        await publisher.send_raw_many_unvalidated(_paced(events, tally, pacer))
    return f"kafka:{INTERACTIONS_TOPIC}"


async def _paced(
    events: Iterator[SimulatedEvent], tally: Tally, pacer: Pacer
) -> AsyncIterator[RawRecord]:
    for event in events:
        if delay := pacer.wait():
            await asyncio.sleep(delay)
        tally.count(event)
        yield event.key, event.payload
