"""The store's JSON writer against the ``eventsourcing`` library's own.

``FastJSONTranscoder`` promises the library's format (typed values wrapped as
``{"_type_": name, "_data_": value}``) written faster. Every event the simulated traffic of
every shipped program produces is encoded by both, with the same transcodings registered, and
must come out byte for byte the same, and read back to the same state.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import JSONTranscoder

from careledger.adapters.store import ledger_transcoder
from careledger.application.ledger import Inbound
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from producers.profiles import PROFILES
from producers.simulator import simulate


def library_transcoder() -> JSONTranscoder:
    """The library's own writer with the store's transcodings registered."""
    transcoder = JSONTranscoder()
    for transcoding in ledger_transcoder().types.values():
        transcoder.register(transcoding)
    return transcoder


def stored_states(tmp_path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every event of a few weeks of each program's traffic, as the state the mapper encodes."""
    ledger = build_ledger(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}"))
    received = datetime.now(UTC)
    for program_id, profile in sorted(PROFILES.items()):
        traffic = simulate(60, 60, 5, date(2026, 6, 1), profile=profile)
        ledger.apply_batch(
            [Inbound(f"t:{program_id}:{n}", e.payload, received) for n, e in enumerate(traffic)]
        )
    states = []
    recorder: Any = ledger.store.recorder
    for notification in recorder.select_notifications(1, 1_000_000):
        event = ledger.store.mapper.to_domain_event(notification)
        state = dict(vars(event))
        state.pop("originator_id")
        state.pop("originator_version")
        states.append((notification.topic, state))
    return states


def test_fast_writer_matches_the_library_byte_for_byte(tmp_path: Path) -> None:
    ours, theirs = ledger_transcoder(), library_transcoder()
    states = stored_states(tmp_path)
    topics = {topic for topic, _ in states}
    assert len(states) > 5_000 and len(topics) >= 12  # the traffic reaches most event kinds
    for topic, state in states:
        written = ours.encode(state)
        assert written == theirs.encode(state), topic
        assert ours.decode(written) == theirs.decode(written) == state, topic
