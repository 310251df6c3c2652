"""The soak's own parts: the oracle's rules on a hand-made log, and a seed's reproducibility.

The oracle (bench/soak_oracle.py) is the soak's yardstick, so it gets a table of its own:
each line of ``LOG`` is a record as a partition holds it and what the oracle must make of it.
"""

from __future__ import annotations

from collections import Counter

from bench.soak_faults import KINDS, schedule
from bench.soak_oracle import expect
from bench.soak_traffic import Intent, Traffic

TOPIC = "t"
P = "pat-1"
VISIT = Intent("visit", P, "v1", 100)
VISIT_OTHER_CONTENT = Intent("visit", P, "v1", 40)
REDEEM = Intent("redeem", P, "r1", 60)
REDEEM_TOO_MUCH = Intent("redeem", P, "r2", 500)
CANCEL = Intent("cancel", P, "c1", target="r1")
CANCEL_AGAIN = Intent("cancel", P, "c2", target="r1")
CANCEL_REJECTED = Intent("cancel", P, "c3", target="r2")
CANCEL_UNKNOWN = Intent("cancel", P, "c4", target="never")
VOID = Intent("void", P, "x1", target="v1")
VOID_AGAIN = Intent("void", P, "x2", target="v1")
VOID_UNKNOWN = Intent("void", P, "x3", target="never")
POISON = Intent("poison", P, code="not_json")

# (bytes, intent, refusal code or "" when accepted or a duplicate)
LOG = [
    (b"visit", VISIT, ""),
    (b"visit", VISIT, ""),  # the same bytes again: a duplicate
    (b"visit-other", VISIT_OTHER_CONTENT, "id_conflict"),
    (b"redeem", REDEEM, ""),  # 100 - 60 = 40
    (b"redeem-too-much", REDEEM_TOO_MUCH, ""),  # rejected: a noted line, not a refusal
    (b"cancel", CANCEL, ""),  # back to 100
    (b"cancel-again", CANCEL_AGAIN, "redemption_not_cancellable"),
    (b"cancel-rejected", CANCEL_REJECTED, "redemption_not_cancellable"),
    (b"cancel-unknown", CANCEL_UNKNOWN, "unknown_redemption"),
    (b"void", VOID, ""),  # 0
    (b"void-again", VOID_AGAIN, "interaction_not_voidable"),
    (b"void-unknown", VOID_UNKNOWN, "unknown_interaction"),
    (b"poison", POISON, "not_json"),
    (b"poison", POISON, "not_json"),  # every copy of a poison record is refused again
]


def test_the_oracle_applies_the_rules_of_docs_rules_md() -> None:
    intents = {value: intent for value, intent, _ in LOG}
    expected = expect(TOPIC, {0: [(i, value) for i, (value, _, _) in enumerate(LOG)]}, intents)
    assert expected.refused == {f"kafka:{TOPIC}:0:{i}": c for i, (_, _, c) in enumerate(LOG) if c}
    account = expected.accounts[P]
    assert account.balance == 0
    assert account.entries == Counter(earned=1, redeemed=1, noted=1, returned=1, reversed=1)
    assert expected.duplicates == 1
    assert expected.applied == 5


def test_a_seed_offers_the_same_bytes_and_the_same_schedule_again() -> None:
    def offered(seed: int) -> list[bytes | None]:
        return [o.value for o in Traffic(seed, 50, 100).offers(3000)]

    assert offered(3) == offered(3) != offered(4)
    assert schedule(3, 180, 2, KINDS) == schedule(3, 180, 2, KINDS) != schedule(4, 180, 2, KINDS)
    assert {f.kind for f in schedule(3, 180, 2, KINDS)} == set(KINDS)


def test_the_traffic_holds_every_kind_of_record() -> None:
    offers = list(Traffic(5, 50, 100).offers(5000))
    kinds = Counter(o.intent.kind for o in offers)
    assert set(kinds) == {"visit", "redeem", "cancel", "void", "poison"}
    assert {o.redelivery for o in offers} == {"", "duplicate", "late"}
    assert len({o.intent.code for o in offers if o.intent.kind == "poison"}) == 12
