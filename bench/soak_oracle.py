"""The soak's oracle: what the ledger must hold after the log the broker actually kept.

Written apart from the domain code on purpose (it imports nothing of careledger): it walks each
partition of the interactions topic in offset order, looks every record's bytes up in the
intents the traffic generator recorded (``bench.soak_traffic``), and applies the rules of
docs/rules.md for the ``soak-flat`` program by hand:

- (source, id) is the dedupe key, ledger-wide: the same bytes again are a duplicate (nothing
  changes); the same key with other content is refused ``id_conflict``;
- a visit earns its fixed points (one ``earned`` entry);
- a redemption takes its points when the balance covers them (``redeemed``), else it is
  recorded as rejected (a ``noted`` line) and cannot be cancelled;
- a cancellation returns an accepted redemption's points (``returned``); one naming an unknown
  redemption is refused ``unknown_redemption``, a rejected or cancelled one
  ``redemption_not_cancellable``;
- a void takes back what a visit earned (``reversed``); an unknown target is refused
  ``unknown_interaction``, an already voided one ``interaction_not_voidable``;
- a poison record is refused with the code it was built with, every copy again.

Modelling the log rather than the offers makes the oracle exact whatever the faults did to
publishing (a retried send that landed twice is just one more duplicate in the log).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bench.soak_traffic import Intent

Logged = tuple[int, bytes | None]  # (offset, value) of one record of a partition


@dataclass
class Account:
    """The oracle's view of one account."""

    balance: int = 0
    entries: Counter[str] = field(default_factory=Counter)  # statement lines by kind


@dataclass
class Expected:
    """What the ledger must hold: accounts, and every refused record's origin and code."""

    accounts: dict[str, Account] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # origin -> code
    duplicates: int = 0
    applied: int = 0

    def account(self, patient: str) -> Account:
        return self.accounts.setdefault(patient, Account())


@dataclass
class _Ledger:
    """Per-key facts the oracle needs while it walks the log."""

    claimed: dict[str, bytes | None] = field(default_factory=dict)  # key -> first bytes
    visits: dict[str, int] = field(default_factory=dict)  # live visit key -> points
    voided: set[str] = field(default_factory=set)
    redemptions: dict[str, int] = field(default_factory=dict)  # redeemable id -> points
    closed: set[str] = field(default_factory=set)  # rejected or cancelled redemptions


def expect(
    topic: str, log: Mapping[int, Iterable[Logged]], intents: Mapping[bytes | None, Intent]
) -> Expected:
    """The expected ledger after every partition of ``log`` was applied once, in order.

    A record whose bytes the generator never offered is a finding in itself (``KeyError``).
    """
    out, state = Expected(), _Ledger()
    for partition in sorted(log):
        for offset, value in log[partition]:
            code = _apply(out, state, intents[value], value)
            if code:
                out.refused[f"kafka:{topic}:{partition}:{offset}"] = code
    return out


def _apply(out: Expected, state: _Ledger, intent: Intent, value: bytes | None) -> str:
    """Apply one record; its refusal code, or "" when the ledger accepts it."""
    if intent.kind == "poison":
        return intent.code
    if intent.key in state.claimed:
        if state.claimed[intent.key] == value:
            out.duplicates += 1
            return ""
        return "id_conflict"
    code = _decide(out.account(intent.patient), state, intent)
    if not code:
        state.claimed[intent.key] = value
        out.applied += 1
    return code


def _decide(account: Account, state: _Ledger, intent: Intent) -> str:
    match intent.kind:
        case "visit":
            account.balance += intent.points
            account.entries["earned"] += 1
            state.visits[intent.key] = intent.points
        case "redeem":
            if account.balance >= intent.points:
                account.balance -= intent.points
                account.entries["redeemed"] += 1
                state.redemptions[intent.key] = intent.points
            else:
                account.entries["noted"] += 1
                state.closed.add(intent.key)
        case "cancel":
            if intent.target in state.closed:
                return "redemption_not_cancellable"
            if intent.target not in state.redemptions:
                return "unknown_redemption"
            account.balance += state.redemptions.pop(intent.target)
            account.entries["returned"] += 1
            state.closed.add(intent.target)
        case "void":
            if intent.target in state.voided:
                return "interaction_not_voidable"
            if intent.target not in state.visits:
                return "unknown_interaction"
            account.balance -= state.visits.pop(intent.target)
            account.entries["reversed"] += 1
            state.voided.add(intent.target)
        case other:
            raise ValueError(f"no such intent: {other}")
    return ""
