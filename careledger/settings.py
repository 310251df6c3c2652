"""Settings, read once at the entry point from ``CARELEDGER_*`` environment variables.

Nothing below the entry point reads ``os.environ``: the settings object is passed down.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///.careledger/careledger.db"


class Settings(BaseSettings):
    """Every knob careledger has. The README's configuration table documents each one."""

    model_config = SettingsConfigDict(env_prefix="CARELEDGER_", extra="ignore", frozen=True)

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="postgresql://user:pass@host:port/db or sqlite:///path (embedded default)",
    )
    database_schema: str = Field(
        "", description="PostgreSQL schema for the event store and read models (default: public)"
    )
    kafka_bootstrap: str = Field(
        "", description="host:port[,host:port...]; empty means start the embedded broker"
    )
    programs_dir: Path | None = Field(
        None, description="extra program files (*.json) on top of the built-in clinic-default"
    )
    aggregate_cache_size: int = Field(
        50_000, ge=1, description="accounts kept in memory per process (bounds memory)"
    )
    batch_max: int = Field(2000, ge=1, description="most records applied in one transaction")
    batch_wait_ms: int = Field(50, ge=0, description="longest wait to fill a batch")
    partitions: int = Field(6, ge=1, description="partitions of the topics the worker creates")
    consumer_group: str = Field("careledger-ledger", description="Kafka consumer group id")
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1000, description="how soon a dead worker's partitions move to another"
    )
    metrics_port: int = Field(9464, ge=0, description="Prometheus /metrics port (0 = off)")
    timezone: str = Field(
        "", description="override every program's own time zone for the close of day"
    )
    maintenance_hour: int = Field(
        1, ge=0, le=23, description="local hour after which the previous day is closed"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    # The FHIR R4 edge (careledger fhir-gateway, docs/fhir.md).
    pseudonym_key: SecretStr | None = Field(
        None, description="HMAC key of the FHIR gateway's pseudonyms (32+ bytes; never logged)"
    )
    fhir_source: str = Field(
        "", description="CloudEvents source of the FHIR gateway's interactions (one per EMR)"
    )
    fhir_program_id: str = Field(
        "clinic-default", description="program of the FHIR gateway's interactions"
    )
    fhir_consumer_group: str = Field(
        "careledger-fhir-gateway", description="Kafka consumer group of the FHIR gateway"
    )
    fhir_specialist_codes: str | None = Field(
        None,
        description="Encounter type/serviceType codes of a specialist visit (CODE or SYSTEM|CODE, "
        "comma-separated; unset: the defaults in docs/fhir.md)",
    )
    fhir_annual_wellness_codes: str | None = Field(
        None, description="Encounter type / Procedure codes of an annual wellness checkup"
    )
    fhir_screening_codes: str | None = Field(
        None, description="Encounter type / Procedure codes of a screening checkup"
    )
    fhir_dental_cleaning_codes: str | None = Field(
        None, description="Encounter type / Procedure codes of a dental cleaning checkup"
    )
    feed_batch_max: int = Field(
        1000, ge=1, description="most ledger events the feed publishes per acknowledged batch"
    )
    ledger_secret: SecretStr | None = Field(
        None,
        description="application secret (32+ bytes; never logged) that wraps each patient's "
        "data key and keys the account directory and interaction keys; unset: nothing is "
        "sealed and erase is refused (ADR 0015)",
    )
