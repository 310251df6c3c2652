"""``programs list|show|validate`` and ``explain``: the programs as written, and why an
interaction earned what it did.

``programs show --json`` prints a program *file* (the ``schemas.program`` model as a program
manager writes it), so its output is something ``programs validate`` accepts. ``explain`` reads
only recorded facts (the account's events and the entries they carry) and the definition of
the version that decided them; it never decides again. The ledger holds pseudonymous ids and
codes only, so nothing printed here can be PHI.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from careledger.application.programs import (
    ProgramFileError,
    compile_program,
    program_files,
    read_file,
)
from careledger.bootstrap import build_ledger
from careledger.commands.rendering import to_json
from careledger.settings import Settings
from domain.account import PatientAccount
from domain.entries import entries_of
from domain.values import LedgerEntry
from schemas import program as pf
from schemas.v1 import DEFAULT_PROGRAM_ID

# Fields every accepted event has; explain prints them once, in its heading.
_HEADING_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "source", "source_id", "interaction"}
)
_SCALARS = (str, int, Decimal, datetime, date)


def register(subparsers: Any) -> None:
    programs = subparsers.add_parser("programs", help="the loyalty programs this ledger runs")
    actions = programs.add_subparsers(dest="programs_command", required=True)
    listing = actions.add_parser("list", help="every program with its versions")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=run_list)

    show = actions.add_parser("show", help="a program's rules and tiers")
    show.add_argument("program_id", metavar="ID")
    show.add_argument("--at", type=_instant, help="only the version in force at this time")
    show.add_argument("--json", action="store_true", help="print a program file")
    show.set_defaults(handler=run_show)

    validate = actions.add_parser("validate", help="check program files")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    validate.set_defaults(handler=run_validate)

    explain = subparsers.add_parser("explain", help="why an interaction earned what it did")
    explain.add_argument("patient")
    explain.add_argument("--source", required=True, help="the CloudEvents source")
    explain.add_argument("--id", required=True, dest="event_id", help="the CloudEvents id")
    explain.add_argument("--program", default=DEFAULT_PROGRAM_ID)
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.set_defaults(handler=run_explain)


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected an RFC 3339 timestamp") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("the timestamp needs an offset, e.g. Z or +01:00")
    return value


# --------------------------------------------------------------------------- programs
def _program_files(settings: Settings) -> dict[str, tuple[str, pf.ProgramFile]]:
    """Program id -> (origin, validated file) of every program the ledger would load."""
    dirs = [settings.programs_dir] if settings.programs_dir else []
    return {
        pid: (origin, read_file(text, origin))
        for pid, (origin, text) in program_files(dirs).items()
    }


def _loaded(settings: Settings) -> dict[str, tuple[str, pf.ProgramFile]] | None:
    try:
        return _program_files(settings)
    except ProgramFileError as exc:
        for problem in exc.problems:
            print(f"{exc.origin}: {problem}", file=sys.stderr)
        return None


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    files = _loaded(settings)
    if files is None:
        return 1
    rows: list[dict[str, Any]] = [
        {
            "program_id": pid,
            "timezone": file.timezone,
            "origin": origin,
            "versions": [
                {"version": v.version, "effective_from": v.effective_from} for v in file.versions
            ],
        }
        for pid, (origin, file) in sorted(files.items())
    ]
    if args.json:
        print(to_json(rows))
        return 0
    for row in rows:
        print(f"{row['program_id']}  ({row['timezone']}, from {row['origin']})")
        for version in row["versions"]:
            print(f"  {version['version']:12} from {version['effective_from'].isoformat()}")
    return 0


def in_force(file: pf.ProgramFile, at: datetime) -> pf.ProgramFile:
    """The program file cut down to the one version in force at ``at`` (the domain's rule)."""
    name = compile_program(file).at(at).version
    (version,) = [v for v in file.versions if v.version == name]
    return file.model_copy(update={"versions": [version]})


def file_document(file: pf.ProgramFile) -> dict[str, Any]:
    """A program file as JSON data, written with the file's own names (``from``)."""
    document: dict[str, Any] = file.model_dump(by_alias=True, mode="json", exclude_none=True)
    return document


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    files = _loaded(settings)
    if files is None:
        return 1
    if args.program_id not in files:
        print(f"no program {args.program_id} (see careledger programs list)", file=sys.stderr)
        return 1
    file = files[args.program_id][1]
    if args.at is not None:
        file = in_force(file, args.at)
    if args.json:
        print(to_json(file_document(file)))
        return 0
    print(f"program {file.program_id}  (time zone {file.timezone})")
    for version in file.versions:
        print()
        print("\n".join(_version_lines(version)))
    return 0


def run_validate(args: argparse.Namespace, settings: Settings) -> int:
    failed = False
    for path in args.paths:
        try:
            file = read_file(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            print(f"{path}: (file): cannot be read ({exc.strerror or type(exc).__name__})")
            failed = True
        except UnicodeDecodeError:
            print(f"{path}: (file): not UTF-8 text")
            failed = True
        except ProgramFileError as exc:
            print("\n".join(f"{path}: {problem}" for problem in exc.problems))
            failed = True
        else:
            count = len(file.versions)
            print(f"ok: {file.program_id} ({count} version{'s' * (count != 1)})")
    return 1 if failed else 0


# ---------------------------------------------------------------- describing a program
def _version_lines(v: pf.VersionFile) -> list[str]:
    q = v.qualification
    lines = [
        f"version {v.version}, in force from {v.effective_from.isoformat()}",
        f"  lots expire after {v.lot_lifetime_days} days; "
        f"tiers by {q.basis} over {q.window_days} days",
        "  tiers:",
    ]
    for t in v.tiers:
        downgrade = f"grace {t.grace_days} days" if t.downgrade == "grace" else t.downgrade
        benefits = f", benefits {', '.join(t.benefits)}" if t.benefits else ""
        lines.append(
            f"    {t.name:12} from {t.threshold:>7}  x{t.multiplier}  downgrade {downgrade}"
            f"{benefits}"
        )
    lines.append("  rules:")
    for rule in v.rules:
        lines += ["    " + line for line in rule_lines(rule)]
    r, s = v.referral, v.spend
    lines.append(
        f"  referral: {'on' if r.enabled else 'off'}, first visit within {r.window_days} days: "
        f"referee {r.referee_bonus}, referrer {r.referrer_bonus}"
    )
    lines.append(
        f"  spend ({s.currency}): {s.discount_base_percent}% from {s.discount_threshold}, "
        f"+{s.discount_step_percent}% per {s.discount_step}, at most {s.discount_max_percent}%; "
        f"{s.reward_id} every {s.reward_every_payments} payments"
    )
    return lines


def rule_lines(rule: pf.RuleFile) -> list[str]:
    """A rule as the program manager wrote it, one fact a line."""
    match = "  ".join(
        f"{name}={value if isinstance(value, str) else '|'.join(value)}"
        for name, value in rule.match.items()
    )
    counts = rule.counts_toward_tier
    if counts is None:
        counts = not isinstance(rule.award, pf.BoostAward)
    lines = [f"{rule.id}: on {rule.on}" + (f", match {match}" if match else "")]
    if rule.when:
        lines.append(f"  when {rule.when}")
    lines.append(f"  award {award_text(rule.award)}")
    lines += [f"  limit {limit_text(limit)}" for limit in rule.limits]
    if rule.window is not None:
        start, end = rule.window.from_, rule.window.until
        lines.append(
            f"  window from {start.isoformat() if start else '(open)'} "
            f"until {end.isoformat() if end else '(open)'}"
        )
    lines.append(
        f"  tier multiplier: {_yes(rule.tier_multiplier)}, counts toward tier: {_yes(counts)}"
    )
    return lines


def award_text(award: pf.FixedAward | pf.PerAmountAward | pf.BestOfAward | pf.BoostAward) -> str:
    match award:
        case pf.FixedAward(points=points):
            return f"{points} points"
        case pf.PerAmountAward(per_amount=per):
            return f"{per.rate} points per 1.00 of {per.field}, rounded down"
        case pf.BestOfAward(best_of=best):
            bands = ", ".join(f"{b.points} at {b.min}+" for b in best.bands)
            return f"best {best.field} band per {best.group_by} ({bands}), topped up"
        case pf.BoostAward(boost=boost):
            how = [f"x{boost.multiply}"] * (boost.multiply is not None)
            how += [f"+{boost.add}"] * (boost.add is not None)
            targets = ", ".join(boost.applies_to) or "every rule that paid"
            return f"boost {' and '.join(how)} of {targets}"
    raise TypeError(f"unknown award {type(award).__name__}")


def limit_text(limit: pf.Limit) -> str:
    caps = [_count(limit.awards, "award")] * (limit.awards is not None)
    caps += [_count(limit.points, "point")] * (limit.points is not None)
    per = f"{limit.days} rolling days" if limit.per == "rolling_days" else limit.per
    counter = f", counter {limit.counter}" if limit.counter else ""
    return f"at most {' and '.join(caps)} per {per}{counter} (reason {limit.reason})"


def _count(n: int | None, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# ---------------------------------------------------------------------------- explain
def run_explain(args: argparse.Namespace, settings: Settings) -> int:
    files = _loaded(settings)
    if files is None:
        return 1
    ledger = build_ledger(settings)
    program = ledger.programs.get(args.program)
    if program is None or args.program not in files:
        print(f"no program {args.program}", file=sys.stderr)
        return 1
    key = ledger.directory.find(args.program, args.patient)
    events = list(ledger.store.events.get(key)) if key is not None else []
    if not events:
        print(f"no account for that patient in program {args.program}", file=sys.stderr)
        return 1
    found = _find(events, args.source, args.event_id)
    if found is None:
        print(
            "no accepted interaction with that source and id in this account "
            "(refused inputs are listed by careledger dead-letters)",
            file=sys.stderr,
        )
        return 1
    event, followers = found
    entries = entries_of(event)
    version_name, basis = _version_of(event, entries)
    if version_name is None:
        version_name, basis = program.at(event.occurred_at).version, "in force at its time"
    versions = {v.version: v for v in files[args.program][1].versions}
    report = _explanation(event, followers, entries, versions.get(version_name))
    report.update(program=args.program, program_version=version_name, version_basis=basis)
    if args.json:
        print(to_json(report))
    else:
        print("\n".join(_explanation_lines(report)))
    return 0


def _find(events: Sequence[Any], source: str, event_id: str) -> tuple[Any, list[Any]] | None:
    """The accepted event with that key, and the events it caused right after it."""
    for index, event in enumerate(events):
        if (
            isinstance(event, PatientAccount.Accepted)
            and event.source == source
            and event.source_id == event_id
        ):
            followers = []
            for later in events[index + 1 :]:
                if isinstance(later, PatientAccount.Accepted | PatientAccount.PointsExpired):
                    break  # the next interaction (expiries come before it)
                followers.append(later)
            return event, followers
    return None


def _version_of(event: Any, entries: Iterable[LedgerEntry]) -> tuple[str | None, str]:
    if recorded := getattr(event, "program_version", None):
        return recorded, "recorded on the event"
    for entry in entries:
        if entry.program_version:
            return entry.program_version, "recorded on its entries"
    return None, ""


def _explanation(
    event: Any, followers: list[Any], entries: list[LedgerEntry], version: pf.VersionFile | None
) -> dict[str, Any]:
    rules = {rule.id: rule for rule in version.rules} if version else {}
    report: dict[str, Any] = {
        "source": event.source,
        "id": event.source_id,
        "interaction": event.interaction,
        "occurred_at": event.occurred_at,
        "recorded_as": type(event).__name__,
        "version_in_program_file": version is not None,
        "points": sum(entry.points for entry in entries),
        "entries": [dataclasses.asdict(entry) for entry in entries],
    }
    if isinstance(event, PatientAccount.PointsEarned):
        report["outcome"] = "paid"
        report["awards"] = [
            {
                "rule_id": award.rule_id,
                "points": award.credit.points,
                "base_points": award.base_points,
                "qualifying": award.qualifying,
                "trimmed_by": award.limit,
                "rule": _rule_document(rules.get(award.rule_id)),
            }
            for award in event.awards
        ]
    elif isinstance(event, PatientAccount.InteractionNoted):
        report["outcome"] = event.outcome
        report["rule_id"] = event.rule_id
        report["rule"] = _rule_document(rules.get(event.rule_id or ""))
    else:
        report["outcome"] = getattr(event, "reason", None) or "recorded"
        report["facts"] = _facts(event)
    report["then"] = [
        {
            "recorded_as": type(later).__name__,
            **_facts(later),
            "entries": [dataclasses.asdict(entry) for entry in entries_of(later)],
        }
        for later in followers
    ]
    return report


def _rule_document(rule: pf.RuleFile | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    document: dict[str, Any] = rule.model_dump(by_alias=True, mode="json", exclude_none=True)
    return document


def _facts(event: Any) -> dict[str, Any]:
    """The plain facts an event recorded (codes, ids, amounts), without its lots' internals."""
    facts: dict[str, Any] = {}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if field.name in _HEADING_FIELDS or field.name == "occurred_at":
            continue
        if field.name == "voided_key":  # (source, id) joined by the unit separator
            facts["voided_source"], _, facts["voided_id"] = str(value).partition("\x1f")
        elif value is None and field.default is None:
            continue  # an optional fact this event did not have (a wallet in a points program)
        elif value is None or isinstance(value, _SCALARS):
            facts[field.name] = value
    return facts


def _explanation_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"{report['interaction']} {report['source']} {report['id']} "
        f"at {report['occurred_at'].isoformat()}",
        f"decided by {report['program']} version {report['program_version']} "
        f"({report['version_basis']})",
        f"recorded as {report['recorded_as']}: {report['outcome']}, {report['points']:+} points",
    ]
    if not report["version_in_program_file"]:
        lines.append("  (that version is no longer in the program file)")
    for award in report.get("awards", []):
        lines.append(
            f"rule {award['rule_id']} paid {award['points']} points "
            f"(base {award['base_points']}, qualifying {award['qualifying']})"
        )
        if award["trimmed_by"]:
            lines.append(f"  trimmed by the limit {award['trimmed_by']}")
        lines += _rule_definition(award["rule"])
    if "rule_id" in report:
        if report["rule_id"]:
            lines.append(f"rule {report['rule_id']} decided it: {report['outcome']}")
            lines += _rule_definition(report["rule"])
        else:
            lines.append(f"no rule paid it: {report['outcome']}")
    for name, value in report.get("facts", {}).items():
        if value is not None:
            lines.append(f"  {name}: {_plain(value)}")
    for entry in report["entries"]:
        lines.append(_entry_line(entry))
    for later in report["then"]:
        facts = ", ".join(
            f"{k}={_plain(v)}"
            for k, v in later.items()
            if k not in ("recorded_as", "entries") and v is not None
        )
        lines.append(f"then {later['recorded_as']}" + (f": {facts}" if facts else ""))
        lines += [_entry_line(entry) for entry in later["entries"]]
    return lines


def _plain(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def _rule_definition(document: dict[str, Any] | None) -> list[str]:
    if document is None:
        return ["  (rule not in that version's definition)"]
    return ["  " + line for line in rule_lines(pf.RuleFile.model_validate(document))]


def _entry_line(entry: dict[str, Any]) -> str:
    notes = [f"{name} {entry[name]}" for name in ("reason", "operator") if entry.get(name)]
    return (
        f"entry {entry['kind']} {entry['points']:+} -> balance {entry['balance_after']} "
        f"(rule {entry['rule_id'] or '-'}, version {entry['program_version'] or '-'})"
        + (f", {', '.join(notes)}" if notes else "")
    )
