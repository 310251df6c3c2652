"""The ``careledger`` command line. Settings are read here, once, and passed down."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from careledger.bootstrap import configure_logging
from careledger.commands import (
    demo_commands,
    erasure_commands,
    feed_commands,
    fhir_commands,
    ledger_commands,
    producer_commands,
    program_commands,
    projection_commands,
    report_commands,
    worker_commands,
)
from careledger.runtime import tune_garbage_collector
from careledger.settings import Settings

COMMAND_MODULES = [
    ledger_commands,
    worker_commands,
    demo_commands,
    projection_commands,
    producer_commands,
    report_commands,
    program_commands,
    feed_commands,
    fhir_commands,
    erasure_commands,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="careledger", description="Event-sourced patient loyalty ledger."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tune_garbage_collector()
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    code: int = args.handler(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
