"""``careledger fhir-gateway`` refuses to start without its key and source, and never shows
the key; its code lists come from settings."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from careledger.cli import main
from careledger.commands.fhir_commands import GatewayConfigError, build_gateway, build_translator
from careledger.settings import Settings
from producers.fhir.codes import CodeToken
from tests.fhir_support import KEY, SOURCE

GOOD = {"pseudonym_key": KEY.decode(), "fhir_source": SOURCE, "kafka_bootstrap": "x:1"}


def settings(**values: object) -> Settings:
    return Settings.model_validate({**GOOD, **values})


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"pseudonym_key": None}, "CARELEDGER_PSEUDONYM_KEY"),
        ({"fhir_source": ""}, "CARELEDGER_FHIR_SOURCE"),
        ({"fhir_program_id": "no-such-program"}, "CARELEDGER_FHIR_PROGRAM_ID"),
        ({"fhir_source": "has spaces"}, "CARELEDGER_FHIR_"),
    ],
)
def test_the_gateway_needs_its_settings(values: dict[str, object], names: str) -> None:
    with pytest.raises(GatewayConfigError, match=names):
        build_translator(settings(**values))


def test_a_short_key_is_refused_without_being_shown() -> None:
    with pytest.raises(GatewayConfigError) as refused:
        build_translator(settings(pseudonym_key="hunter2-short-key"))
    assert "hunter2" not in str(refused.value)
    assert KEY.decode() not in repr(settings())
    assert KEY.decode() not in str(settings().model_dump())


def test_code_lists_come_from_settings() -> None:
    config = build_translator(
        settings(fhir_specialist_codes="", fhir_screening_codes="http://loinc.org|1-8, 2-6")
    ).config
    assert config.specialist == ()
    assert config.checkups["screening"] == (
        CodeToken("1-8", "http://loinc.org"),
        CodeToken("2-6"),
    )
    assert CodeToken("G0438") in config.checkups["annual_wellness"]  # the default list


def test_the_gateway_is_wired_from_settings() -> None:
    gateway = build_gateway(settings(fhir_consumer_group="emr-a"), CollectorRegistry())
    assert gateway.group_id == "emr-a"
    assert gateway.translator.config.program_id == "clinic-default"


def test_the_command_exits_2_without_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CARELEDGER_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("CARELEDGER_FHIR_SOURCE", SOURCE)
    monkeypatch.delenv("CARELEDGER_PSEUDONYM_KEY", raising=False)
    assert main(["fhir-gateway"]) == 2
    assert "CARELEDGER_PSEUDONYM_KEY" in capsys.readouterr().err
