"""The composition root: builds the ledger and its adapters from settings."""

from __future__ import annotations

import logging

from careledger.adapters.sealing_migration import ensure_sealed
from careledger.adapters.shredding import KeyRing
from careledger.adapters.store import open_store
from careledger.application.ledger import Ledger
from careledger.application.programs import load_programs
from careledger.settings import Settings


def configure_logging(settings: Settings) -> None:
    """Plain, structured-enough logs to stderr; never patient data (see ADR 0003)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def build_ledger(settings: Settings) -> Ledger:
    """Open the event store and load the programs the ledger runs."""
    programs = load_programs([settings.programs_dir] if settings.programs_dir else [])
    ring = KeyRing.of(settings.ledger_secret)  # (ADR 0015)
    store = open_store(settings.database_url, settings.database_schema, keyring=ring)
    if ring is not None:
        ensure_sealed(store)  # a store written without the secret is sealed first
    return Ledger(store, programs, cache_size=settings.aggregate_cache_size, keyring=ring)
