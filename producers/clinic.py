"""A simulated clinic: its patients' valid v1 interactions, one day at a time, in time order.

What the patients do is the program's traffic profile (``producers.profiles``): the clinic's
own (``clinic-default``) by default, or a coalition's partner purchases and portal actions, an
activity program's step readings, a catalogue and paid memberships, or money wallets and a
stamp card, with the same agenda and patient model. What the ledger would refuse outright (a
voucher it never issued, a cancelled membership cancelled again, more than a wallet holds) is
sent only when the patient's estimate (``producers.holdings``) makes it sure.

Each patient acts through scheduled tasks (an agenda keyed by day) rather than by being
visited every day: a visit schedules the next one after a random gap, a year plan schedules
that year's checkups and assessments. Only the tasks due today are touched, so the cost is
per event, not per patient-day, and memory holds today's events plus a few pending tasks
per patient, however many days are simulated.

Everything random comes from one seeded ``random.Random`` and time comes from the day index,
never the wall clock, so a seed and a start date always give the same traffic.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from itertools import accumulate
from random import Random
from typing import Any, Final, TypeVar

import orjson

from producers import habits as h
from producers.holdings import Holdings, Membership, add_months
from producers.patients import Patient, Points
from producers.profiles import (
    CLINIC_DEFAULT,
    Payers,
    Plan,
    Reward,
    Shelf,
    TrafficProfile,
    period_key,
)

Event = dict[str, Any]
_Action = Callable[[int, Patient, Any], None]

# Agenda entries are plain ints, (argument ticket << 36) | (patient index << 4) | action, not
# tuples of bound methods: ints are invisible to the garbage collector, and millions of
# short-lived tuples promoted to the oldest generation made full collections half the runtime.
(_ENROL, _VISIT, _STEPS, _REDEEM, _REFER, _PLAN_YEAR, _ASSESS, _CHECKUP, _VOID, _CANCEL,
 _PURCHASE, _ENGAGE, _LATE_READINGS, _MEMBERSHIP, _END_MEMBERSHIP, _USE_VOUCHER,
 _PREPAY, _COVER) = range(18)  # fmt: skip
_ACTION_BITS: Final = 5
_PATIENT_BITS: Final = 32
_T = TypeVar("_T")
_HOPEFUL: Final = 1.5  # a patient two thirds of the way to a reward's tier believes it holds it
_WITH_POINTS: Final = 0.5  # catalogue requests that also state the price (the rest omit it)

# "HH:MM:" and "SSZ" for every minute and second of a day: two lookups beat a 4-field format.
_MINUTES: Final = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(24 * 60))
_SECONDS: Final = tuple(f"{s:02d}Z" for s in range(60))
_Reading = tuple[int, int]  # (second of the day, steps so far)


class _Picker:
    """Weighted choice by one uniform draw and a bisect (``random.choices`` is slower)."""

    def __init__(self, items: Sequence[tuple[_T, float]]) -> None:
        self.values = [value for value, _ in items]
        self.cumulative = list(accumulate(weight for _, weight in items))

    def pick(self, rng: Random) -> Any:
        return self.values[bisect(self.cumulative, rng.random() * self.cumulative[-1])]


_VISIT_TYPES: Final = _Picker([(name, spec[0]) for name, spec in h.VISITS.items()])
_RATINGS: Final = _Picker(h.RATINGS)


def _share(index: int, salt: int) -> float:
    """A fixed number in [0, 1) for a patient (a hash, not a draw: the traffic stays the same)."""
    return (index * salt * 2654435761 % 2**32) / 2**32


def _payer_class(payers: Payers, index: int) -> str:
    share, point = 0.0, _share(index, 1)
    for payer_class, weight in payers.mix:
        share += weight
        if point < share:
            return payer_class
    return payers.mix[-1][0]


class Clinic:
    """Generates the valid events of ``patients`` patients over ``days`` days from ``start``
    (``population``: who they are, by default the profile's ``default`` one)."""

    def __init__(
        self,
        patients: int,
        days: int,
        seed: int,
        start: date,
        population: h.Population | None = None,
        profile: TrafficProfile = CLINIC_DEFAULT,
    ) -> None:
        self._rng = Random(seed)
        self._profile = profile
        self._wearables = profile.wearables
        population = population or profile.populations["default"]
        self._population = population
        self._tags = {
            source: f"{profile.tag}-{tag}" if profile.tag else tag
            for source, tag in profile.sources.items()
        }
        self._programid = profile.wire_programid
        self._shelves = _Picker([(shelf, shelf.weight) for shelf in profile.shelves] or [(None, 1)])
        self._portal = _Picker([(a, a.weight) for a in profile.actions] or [(None, 1)])
        self._habits = _Picker([(habit, habit.share) for habit in population.habits])
        self._seed = seed
        self._days = days
        self._start = start
        self._patient_count = patients
        self._agenda: dict[int, list[int]] = {}
        self._args: dict[int, Any] = {}
        self._tickets = 0
        self._actions: tuple[_Action, ...] = (
            self._enrol,
            self._visit,
            self._steps,
            self._redeem,
            self._refer,
            self._plan_year,
            self._assess,
            self._checkup,
            self._void,
            self._cancel,
            self._purchase,
            self._engage,
            self._late_readings,
            self._membership,
            self._end_membership,
            self._use_voucher,
            self._prepay,
            self._cover,
        )
        self._today: list[tuple[int, int, bytes, str, str]] = []
        self._day = -1
        self._prefix = ""
        self._iso_day = ""
        self._seq = 0
        self._outsiders = 0
        self._patients: list[Patient] = []
        self._future: list[Patient] = []  # late joiners, claimable as referees
        # Today's payments (+1) and payment voids (-1) as (second, sequence, patient, delta):
        # the stamp card is counted in the ledger's order, once the day's order is known.
        self._stamp_book: list[tuple[int, int, Patient, int]] = []
        self._populate()

    def days(self) -> Iterator[list[tuple[bytes, str, str]]]:
        """Each day's events as (JSON bytes, subject, type), sorted by event time.

        Ties keep the order the events were made in, so a payment follows its visit.
        """
        actions, patients, args = self._actions, self._patients, self._args
        action_mask = (1 << _ACTION_BITS) - 1
        patient_mask = (1 << _PATIENT_BITS) - 1
        for day in range(self._days):
            self._day = day
            self._iso_day = (self._start + timedelta(days=day)).isoformat()
            self._prefix = self._iso_day + "T"
            for entry in self._agenda.pop(day, ()):
                ticket = entry >> (_ACTION_BITS + _PATIENT_BITS)
                patient = patients[(entry >> _ACTION_BITS) & patient_mask]
                actions[entry & action_mask](day, patient, args.pop(ticket) if ticket else None)
            self._today.sort()  # (second, sequence) is unique: the rest is never compared
            if self._stamp_book:
                self._settle_stamps(day)
            yield [(payload, subject, kind) for _, _, payload, subject, kind in self._today]
            self._today = []

    def _populate(self) -> None:
        rng = self._rng
        launch_days = min(self._days, h.LAUNCH_DAYS)
        for index in range(1, self._patient_count + 1):
            habit: h.Habit = self._habits.pick(rng)
            late = rng.random() >= h.LAUNCH_SHARE
            join_day = rng.randrange(self._days if late else launch_days)
            patient = Patient(index, habit, join_day, late)
            if habit.wears_device:
                patient.step_mean = rng.uniform(*habit.step_range)
            patient.pools = {partner: Points() for partner in self._profile.restricted_partners}
            if self._profile.has_holdings:
                patient.holdings = Holdings()
            self._patients.append(patient)
            self._schedule(join_day, _ENROL, patient)
            if late:
                self._future.append(patient)
        rng.shuffle(self._future)

    # -- scheduling and output ---------------------------------------------------------------

    def _schedule(self, day: int, action: int, patient: Patient, arg: Any = None) -> None:
        """Queue a task; never for today (today's list is being read) nor past the horizon."""
        if day <= self._day:
            day = self._day + 1
        if day >= self._days:
            return
        entry = patient.index << _ACTION_BITS | action
        if arg is not None:
            self._tickets += 1
            self._args[self._tickets] = arg
            entry |= self._tickets << (_ACTION_BITS + _PATIENT_BITS)
        self._agenda.setdefault(day, []).append(entry)

    def _again(self, day: int, per_day: float, action: int, patient: Patient) -> None:
        """Schedule the next occurrence of a Poisson-like habit after a random gap."""
        if per_day > 0:
            self._schedule(day + 1 + int(self._rng.expovariate(per_day)), action, patient)

    def _emit(self, second: int, patient: Patient, kind: str, source: str, data: Event) -> str:
        """Record one event at ``second`` of today; returns its CloudEvents id.

        It is serialised at once: bytes are invisible to the garbage collector, and a day's
        worth of dicts kept until the day ends was a large part of the collector's work.
        """
        self._seq += 1
        second = min(second, 86_399)
        event_id = f"{self._tags[source]}-{self._seed}-{self._seq}"
        minute, rest = divmod(second, 60)
        event = {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": kind,
            "time": self._prefix + _MINUTES[minute] + _SECONDS[rest],
            "subject": patient.pid,
            "data": data,
        }
        if self._programid is not None:  # clinic-default's events keep the contract's default
            event["programid"] = self._programid
        self._today.append((second, self._seq, orjson.dumps(event), patient.pid, kind))
        return event_id

    def _second(self, from_hour: int, to_hour: int) -> int:
        # random() and a multiply: randrange costs three times as much on this hot path.
        return from_hour * 3600 + int(self._rng.random() * (to_hour - from_hour) * 3600)

    def _count(self, expected: float) -> int:
        """A whole number of occurrences with the given mean."""
        whole = int(expected)
        return whole + (self._rng.random() < expected - whole)

    # -- what patients do --------------------------------------------------------------------

    def _enrol(self, day: int, patient: Patient, _: Any) -> None:
        if patient.enrolled or patient.join_day != day:
            return  # rescheduled by a referral: the task at the new day enrols
        rng, habit = self._rng, patient.habit
        patient.enrolled = True
        channel, source = rng.choice(h.CHANNELS)
        data: Event = {"channel": channel}
        referrer = patient.referrer
        word_of_mouth = self._profile.word_of_mouth
        if referrer is None and patient.late and word_of_mouth and rng.random() < word_of_mouth:
            referrer = self._someone_enrolled(besides=patient)
        if referrer is not None:
            data["referred_by"] = referrer
        payers = self._profile.payers
        if payers is not None:
            data["payer_class"] = patient.payer_class = _payer_class(payers, patient.index)
            if _share(patient.index, 7919) < payers.change_share:  # no draw: same traffic
                self._schedule(day + 30 + patient.index % 300, _COVER, patient)
        self._emit(self._second(8, 21), patient, "patient.enrolled", source, data)
        if habit.churns:
            wait = rng.expovariate(1 / self._population.churn_mean_days)
            patient.churn_day = day + self._population.churn_after_days + int(wait)
        if patient.referred:  # the referee's first visit falls inside the bonus window
            self._schedule(day + rng.randint(1, 21), _VISIT, patient)
        else:
            self._again(day, habit.visits_per_month / 30, _VISIT, patient)
        if habit.wears_device:
            self._schedule(day + 1, _STEPS, patient)
        self._again(day, habit.redemptions_per_year / 365, _REDEEM, patient)
        self._again(day, habit.referrals_per_year / 365, _REFER, patient)
        self._again(day, habit.purchases_per_month / 30, _PURCHASE, patient)
        self._again(day, habit.engagements_per_month / 30, _ENGAGE, patient)
        self._plan_year(day, patient, None)
        self._again(day, habit.prepayments_per_year / 365, _PREPAY, patient)
        if self._profile.memberships is not None and rng.random() < habit.buys_membership:
            self._schedule(day + rng.randint(1, 30), _MEMBERSHIP, patient)

    def _someone_enrolled(self, besides: Patient) -> str | None:
        """An enrolled patient other than ``besides`` (who would be referring themselves)."""
        for _ in range(5):
            other = self._patients[self._rng.randrange(self._patient_count)]
            if other.enrolled and other is not besides:
                return other.pid
        return None

    def _visit(self, day: int, patient: Patient, _: Any) -> None:
        if day >= patient.churn_day:
            return
        rng, habit = self._rng, patient.habit
        visit_type: str = _VISIT_TYPES.pick(rng)
        _, points, (low, high), (opens, closes) = h.VISITS[visit_type]
        second = self._second(opens, closes)
        data: Event = {"visit_id": f"visit-{self._seed}-{self._seq + 1}", "visit_type": visit_type}
        if visit_type != "telehealth":
            data["location_id"] = rng.choice(h.LOCATIONS)
        visit_id = self._emit(second, patient, "visit.completed", h.EMR, data)
        if not self._profile.pays_visits:
            points = 0
        patient.earn(day, points)
        self._maybe_void(day, patient, h.EMR, visit_id, points, h.VISIT_VOID_REASONS)
        if rng.random() < habit.pays_after_visit:
            second += rng.randint(300, 1800)
            cents = rng.randint(low, high)
            if rng.random() < 0.8:  # list prices are whole multiples of 5.00; co-pays are not
                cents -= cents % 500
            paid = self._pay(day, second, patient, cents)
            self._maybe_void(day, patient, h.POS, paid, 0, h.PAYMENT_VOID_REASONS)
        if rng.random() < habit.reviews_after_visit:
            self._review(day, patient, second + rng.randint(3600, 6 * 3600))
        self._again(day, habit.visits_per_month / 30, _VISIT, patient)

    def _maybe_void(
        self,
        day: int,
        patient: Patient,
        source: str,
        event_id: str,
        points: int,
        reasons: tuple[str, ...],
    ) -> None:
        if self._rng.random() < self._profile.void_share:
            arg = (source, event_id, points, self._rng.choice(reasons))
            self._schedule(day + self._rng.randint(1, 5), _VOID, patient, arg)
            if patient.holdings is not None:  # take it back now: a void may come before a
                self._take_back(day, patient, points)  # redemption of its day in time order
                patient.holdings.qualifying.debt += points

    def _void(self, day: int, patient: Patient, arg: tuple[str, str, int, str]) -> None:
        source, voided_id, points, reason = arg
        data = {"voided_id": voided_id, "voided_source": source, "reason": reason}
        self._emit(self._second(8, 19), patient, "interaction.voided", source, data)
        if source == h.POS and self._profile.stamps is not None:
            self._stamp_book.append((*self._today[-1][:2], patient, -1))
        if patient.holdings is None:  # with holdings it was taken back when scheduled
            self._take_back(day, patient, points)

    def _take_back(self, day: int, patient: Patient, points: int) -> None:
        """The ledger takes back what was earned, tier multiplier included: assume the most,
        and from every pool (once the voided lot is spent it takes from any)."""
        for pool in patient.every_pool():
            pool.spend(day, int(points * self._profile.max_multiplier))

    def _review(self, day: int, patient: Patient, second: int) -> None:
        data: Event = {"rating": _RATINGS.pick(self._rng)}
        channel = self._rng.choice(h.REVIEW_CHANNELS)
        if channel is not None:
            data["channel"] = channel
        self._emit(second, patient, "review.submitted", h.PORTAL, data)
        if day - patient.review_day >= self._profile.review_cooldown_days:
            patient.review_day = day
            patient.earn(day, h.REVIEW_POINTS)

    # -- partners and the portal (other programs' profiles) ----------------------------------

    def _purchase(self, day: int, patient: Patient, _: Any) -> None:
        if day >= patient.churn_day:
            return
        rng = self._rng
        self._again(day, patient.habit.purchases_per_month / 30, _PURCHASE, patient)
        shelf: Shelf = self._shelves.pick(rng)
        cents = rng.randint(*shelf.cents)
        if rng.random() < 0.6:  # shelf prices end in .99
            cents += 99 - cents % 100
        data: Event = {
            "purchase_id": f"pur-{self._seed}-{self._seq + 1}",
            "partner_id": shelf.partner_id,
            "amount": _money(cents),
            "currency": self._profile.currency,
            "category": shelf.category,
        }
        event_id = self._emit(
            self._second(*shelf.hours), patient, "purchase.recorded", shelf.source, data
        )
        points = cents * shelf.points_per_unit // 100  # per 1.00, rounded down, as the ledger
        patient.pools.get(shelf.partner_id, patient).earn(day, points)
        self._maybe_void(day, patient, shelf.source, event_id, points, h.PAYMENT_VOID_REASONS)

    def _engage(self, day: int, patient: Patient, _: Any) -> None:
        """A portal session: one action or a few, whatever the program's caps (the ledger
        pays up to them; the estimate counts only what they allow)."""
        if day >= patient.churn_day:
            return
        rng = self._rng
        self._again(day, patient.habit.engagements_per_month / 30, _ENGAGE, patient)
        second = self._second(6, 23)
        for _ in range(1 + self._count(self._profile.actions_per_session)):
            action = self._portal.pick(rng)
            data = {"engagement_id": f"eng-{self._seed}-{self._seq + 1}", "action": action.action}
            self._emit(second, patient, "engagement.recorded", h.PORTAL, data)
            second += rng.randint(30, 900)
            periods = [
                (f"{action.action}/{per}", period_key(per, self._iso_day), n)
                for per, n in action.caps
            ]
            if all(patient.used(counter, key) < n for counter, key, n in periods):
                for counter, key, _n in periods:
                    patient.use(counter, key, 1)
                patient.earn(day, action.points)

    def _steps(self, day: int, patient: Patient, _: Any) -> None:
        if day >= patient.churn_day:
            return
        rng, spec = self._rng, self._wearables
        self._schedule(day + 1, _STEPS, patient)
        if rng.random() >= spec.reading_days:
            return
        mean = patient.step_mean
        total = min(60_000, max(0, int(rng.gauss(mean, mean * patient.habit.step_spread))))
        readings: list[_Reading] = []
        for chance in spec.partials:  # earlier syncs: part of the day's steps
            if rng.random() < chance:
                partial = int(total * rng.uniform(0.3, 0.7))
                readings.append((self._second(*spec.partial_hours), partial))
        readings.append((self._second(*spec.total_hours), total))
        if spec.late_share and rng.random() < spec.late_share:
            late = (self._iso_day, readings)
            self._schedule(day + rng.randint(1, spec.late_days), _LATE_READINGS, patient, late)
        else:
            self._late_readings(day, patient, (self._iso_day, readings))

    def _late_readings(self, day: int, patient: Patient, arg: tuple[str, list[_Reading]]) -> None:
        """Send a day's readings (today's, or an earlier day's synced late) and estimate what
        its total earns today, within the profile's monthly cap."""
        reading_day, readings = arg
        device = patient.device
        for second, value in readings:
            reading = {"metric": "steps", "day": reading_day, "value": value, "device": device}
            self._emit(second, patient, "activity.reading", h.WEARABLES, reading)
        total = readings[-1][1]
        spec = self._wearables
        for floor, points in spec.bands:
            if total >= floor:
                if spec.month_cap is not None:
                    month = period_key("month", self._iso_day)
                    points = min(points, spec.month_cap - patient.used("steps", month))
                    patient.use("steps", month, points)
                patient.earn(day, points)
                break

    def _redeem(self, day: int, patient: Patient, _: Any) -> None:
        if day >= patient.churn_day:
            return
        rng = self._rng
        self._again(day, patient.habit.redemptions_per_year / 365, _REDEEM, patient)
        if self._profile.misplaced_share and rng.random() < self._profile.misplaced_share:
            self._misplaced(day, patient)
            return
        if self._profile.catalogue:
            self._redeem_catalogue(day, patient)
            return
        rewards = self._profile.rewards
        if rng.random() < h.OVERREACH:  # asks for the cheapest reward it cannot afford
            choices = [r for r in rewards if r.points > self._budget(day, patient, r)][:1]
        else:
            choices = [
                r for r in rewards if r.points <= self._budget(day, patient, r) * h.SPEND_SHARE
            ]
        if not choices:
            return
        reward: Reward = rng.choice(choices)
        available, points = self._budget(day, patient, reward), reward.points
        redemption_id = self._request(patient, reward)
        if points <= available and not self._capped(patient, points):
            pool = patient.pools.get(reward.partner_id or "")
            if pool is None:
                patient.spend(day, points)
            else:  # the ledger takes soonest-expiring lots of either: assume both lose it all
                for spent in (patient, pool):
                    spent.spend(day, min(points, spent.available(day)))
            # Only cancel what surely went through: the estimate of the balance is rough, and a
            # cancellation of a redemption the ledger rejected is (rightly) refused.
            federal = self._federal(patient)  # (a cancellation would free cap room: unmodelled)
            if points <= available * h.SURE_SHARE and rng.random() < h.CANCEL_SHARE and not federal:
                self._schedule(day + rng.randint(1, 10), _CANCEL, patient, redemption_id)

    def _federal(self, patient: Patient) -> bool:
        payers = self._profile.payers
        return payers is not None and patient.payer_class in payers.federal

    def _capped(self, patient: Patient, points: int) -> bool:
        """Whether the ledger refuses this redemption ``payer_cap``; counts it when not.

        Every redemption of the year counts toward it, as in the ledger, whatever the class
        it was made under."""
        payers, year = self._profile.payers, self._iso_day[:4]
        if payers is None:
            return False
        total = patient.capped.get(year, 0)
        if self._federal(patient) and (
            points > payers.item_cap_points or total + points > payers.year_cap_points
        ):
            return True
        patient.capped[year] = total + points
        return False

    def _cover(self, day: int, patient: Patient, _: Any) -> None:
        """A coverage change: a federal class leaves it for commercial cover, any other
        becomes medicare (turning 65)."""
        patient.payer_class = "commercial" if self._federal(patient) else "medicare"
        data: Event = {"payer_class": patient.payer_class}
        self._emit(self._second(8, 18), patient, "coverage.changed", h.PORTAL, data)

    def _budget(self, day: int, patient: Patient, reward: Reward) -> int:
        """What the patient can surely spend on ``reward``: points a partner restricts to
        itself count only there."""
        pool = patient.pools.get(reward.partner_id or "")
        return patient.available(day) + (pool.available(day) if pool is not None else 0)

    def _request(self, patient: Patient, reward: Reward) -> str:
        redemption_id = f"rdm-{self._seed}-{self._seq + 1}"
        data: Event = {
            "redemption_id": redemption_id,
            "reward_id": reward.reward_id,
            "points": reward.points,
        }
        if reward.partner_id is not None:
            data["partner_id"] = reward.partner_id
        self._emit(self._second(7, 23), patient, "redemption.requested", h.PORTAL, data)
        return redemption_id

    def _misplaced(self, day: int, patient: Patient) -> None:
        """A patient who counts points restricted to one partner when redeeming at another:
        the ledger rejects it unless the rest happens to cover it."""
        general = patient.available(day)
        restricted = sum(pool.available(day) for pool in patient.pools.values())
        choices = [
            reward
            for reward in self._profile.rewards
            if reward.partner_id not in patient.pools
            and general < reward.points <= general + restricted
        ]
        if choices:
            reward: Reward = self._rng.choice(choices)
            self._request(patient, reward)
            patient.spend(day, min(reward.points, general))  # in case it went through

    def _cancel(self, day: int, patient: Patient, redemption_id: str) -> None:
        # The returned points are not added back: they return to their original lots, which
        # may expire soon, and an estimate that is too low only makes redemptions safer.
        data = {"redemption_id": redemption_id}
        self._emit(self._second(7, 23), patient, "redemption.cancelled", h.PORTAL, data)

    def _refer(self, day: int, patient: Patient, _: Any) -> None:
        if day >= patient.churn_day:
            return
        rng = self._rng
        self._again(day, patient.habit.referrals_per_year / 365, _REFER, patient)
        converts = rng.random() < h.REFERRAL_CONVERTS
        referee = self._claim_referee(day, patient) if converts else None
        if referee is None:  # a friend who never signs up
            self._outsiders += 1
            name = f"p-{self._patient_count + self._outsiders:06d}"
        else:
            name = referee.pid
            referee.referred = True
            referee.join_day = day + rng.randint(1, 10)
            if rng.random() < h.REFERRED_BY_ON_ENROLMENT:
                referee.referrer = patient.pid
            self._schedule(referee.join_day, _ENROL, referee)
        self._emit(self._second(7, 23), patient, "referral.made", h.PORTAL, {"referee": name})

    def _claim_referee(self, day: int, referrer: Patient) -> Patient | None:
        """A late joiner who has not enrolled yet and would otherwise join well after today.

        Never the referrer: a self-referral is refused by the ledger, and the simulator's valid
        traffic must be valid.
        """
        while self._future:
            candidate = self._future.pop()
            if candidate is referrer:
                continue
            if not candidate.enrolled and candidate.join_day > day + 10:
                return candidate
        return None

    # -- the rewards side: payments from wallets, stamps, catalogue, memberships -------------

    def _pay(self, day: int, second: int, patient: Patient, cents: int) -> str:
        """A payment of ``cents``: in a program with wallets, part of it may come from the
        prepaid and the cashback wallets (never more than they surely hold)."""
        data: Event = {"amount": _money(cents), "currency": self._profile.currency}
        wallets, holdings = self._profile.wallets, patient.holdings
        if wallets is not None and holdings is not None:
            rng, card = self._rng, cents
            prepaid = min(holdings.prepaid_on(day), card - 100)  # a pound or more by card
            prepaid = prepaid if prepaid > 0 and rng.random() < wallets.prepaid_use else 0
            card -= prepaid
            cashback = min(holdings.cashback_on(day, wallets.cashback_days), card - 100)
            cashback = cashback if cashback >= 100 and rng.random() < wallets.cashback_use else 0
            card -= cashback
            data["amount"] = _money(card)
            if cashback:
                data["cashback_used"] = _money(cashback)
                holdings.draw_cashback(cashback)
            if prepaid:
                data["prepaid_used"] = _money(prepaid)
                holdings.draw_prepaid(prepaid)
            holdings.earn_cashback(day, card * wallets.cashback_percent // 100)  # down to 1p
        paid = self._emit(second, patient, "payment.recorded", h.POS, data)
        if self._profile.stamps is not None:
            self._stamp_book.append((*self._today[-1][:2], patient, 1))
        return paid

    def _settle_stamps(self, day: int) -> None:
        """Count today's payments and payment voids in time order, as the ledger will; a
        voucher a payment unlocks is used later (or never, and expires)."""
        stamps = self._profile.stamps
        assert stamps is not None
        for _, _, patient, delta in sorted(self._stamp_book, key=lambda entry: entry[:2]):
            assert patient.holdings is not None
            number = patient.holdings.stamps.count(delta, stamps.every)
            if number is not None and self._rng.random() < stamps.use:
                voucher = f"{stamps.reward_id}:{number}"
                use_day = day + self._rng.randint(*stamps.use_days)
                self._schedule(use_day, _USE_VOUCHER, patient, voucher)
        self._stamp_book = []

    def _prepay(self, day: int, patient: Patient, _: Any) -> None:
        wallets, holdings = self._profile.wallets, patient.holdings
        if day >= patient.churn_day or wallets is None or holdings is None:
            return
        rng = self._rng
        self._again(day, patient.habit.prepayments_per_year / 365, _PREPAY, patient)
        low, high = wallets.prepayment_cents
        cents = rng.randint(low // 5_000, high // 5_000) * 5_000  # in steps of 50.00
        data = {
            "prepayment_id": f"pre-{self._seed}-{self._seq + 1}",
            "amount": _money(cents),
            "currency": self._profile.currency,
        }
        self._emit(self._second(8, 19), patient, "prepayment.recorded", h.POS, data)
        holdings.prepay(day, cents)

    def _redeem_catalogue(self, day: int, patient: Patient) -> None:
        """A session at the catalogue: one reward the patient believes it can have, asked for
        once or, for a course of visits, a few times."""
        rng, holdings = self._rng, patient.holdings
        assert holdings is not None
        rewards, available = self._profile.rewards, patient.available(day)
        if rng.random() < h.OVERREACH:  # asks for the cheapest reward it cannot afford
            choices = [r for r in rewards if r.points > available][:1]
        else:  # what it fancies among the rewards of its tier; it saves up for a dear one
            hoped = holdings.qualifying.available(day) * _HOPEFUL
            choices = [r for r in rewards if hoped >= r.min_qualifying]
        if not choices:
            return
        reward: Reward = _Picker([(r, r.weight) for r in choices]).pick(rng)
        if reward.points > available * h.SPEND_SHARE:
            return
        second = self._second(7, 22)
        for _ in range(1 + self._count(reward.burst)):
            self._ask(day, second, patient, reward)
            second += rng.randint(20, 600)

    def _ask(self, day: int, second: int, patient: Patient, reward: Reward) -> None:
        """Request ``reward``; if it surely goes through, use its voucher later, cancel it, or
        let it expire. The ledger refuses some as a business outcome (tier, limit, points)."""
        rng, holdings = self._rng, patient.holdings
        assert holdings is not None
        counter, month = f"{reward.reward_id}/month", period_key("month", self._iso_day)
        within_limit = not reward.per_month or patient.used(counter, month) < reward.per_month
        patient.use(counter, month, 1)  # every request: an upper bound of those accepted
        surely_held = patient.available(day) - holdings.earned_today(day)
        sure = (
            within_limit
            and reward.points <= surely_held * h.SURE_SHARE
            and holdings.qualifying_before(day) >= reward.min_qualifying
        )
        redemption_id = f"rdm-{self._seed}-{self._seq + 1}"
        data: Event = {"redemption_id": redemption_id, "reward_id": reward.reward_id}
        if rng.random() < _WITH_POINTS:
            data["points"] = reward.points
        self._emit(second, patient, "redemption.requested", h.PORTAL, data)
        patient.spend(day, min(reward.points, max(0, patient.available(day))))
        if sure:
            fate = rng.random()
            if fate < self._profile.voucher_use:
                use_day = day + rng.randint(*self._profile.voucher_use_days)
                self._schedule(use_day, _USE_VOUCHER, patient, redemption_id)
            elif fate < self._profile.voucher_use + h.CANCEL_SHARE:
                self._schedule(day + rng.randint(1, 10), _CANCEL, patient, redemption_id)

    def _use_voucher(self, day: int, patient: Patient, voucher_id: str) -> None:
        if day >= patient.churn_day:
            return  # gone: the voucher expires unused
        data = {"redemption_id": voucher_id, "location_id": self._rng.choice(h.LOCATIONS)}
        self._emit(self._second(8, 18), patient, "reward.used", h.POS, data)

    def _membership(self, day: int, patient: Patient, _: Any) -> None:
        """Buy a membership: renew the active one, or start one when none can be active."""
        spec, holdings = self._profile.memberships, patient.holdings
        if day >= patient.churn_day or spec is None or holdings is None:
            return
        current = holdings.membership
        if current is not None and current.active_on(day) and not current.cancelled:
            plan = next(p for p in spec.plans if p.plan_id == current.plan_id)
            current.paid_through = self._months_after(current.paid_through, plan.months)
            membership = current
        elif current is None or day > current.paid_through:
            plan = _Picker([(p, p.weight) for p in spec.plans]).pick(self._rng)
            membership_id = f"mbr-{self._seed}-{self._seq + 1}"
            end = self._months_after(day, plan.months)
            membership = Membership(membership_id, plan.plan_id, day, end, plan.multiplier)
            holdings.membership = membership
        else:
            return  # its last day or cancelled: whether it is still active is unclear
        data = {
            "membership_id": membership.membership_id,
            "plan_id": plan.plan_id,
            "amount": _money(plan.cents),
            "currency": self._profile.currency,
        }
        self._emit(self._second(8, 20), patient, "membership.purchased", h.POS, data)
        self._next_term(day, patient, membership, plan)

    def _next_term(self, day: int, patient: Patient, membership: Membership, plan: Plan) -> None:
        """Decide now how this term ends: cancelled during it, renewed before it ends, or
        lapsed (and maybe bought again some weeks later)."""
        spec, rng = self._profile.memberships, self._rng
        assert spec is not None
        last = membership.paid_through - 1  # the last day surely inside the term
        fate = rng.random()
        if fate < spec.cancel and last > day:
            self._schedule(rng.randint(day + 1, last), _END_MEMBERSHIP, patient)
        elif fate < spec.cancel + spec.renew and last > day:
            renew_day = max(day + 1, membership.paid_through - rng.randint(1, 5))
            self._schedule(renew_day, _MEMBERSHIP, patient)
        elif rng.random() < spec.rejoin:
            self._schedule(membership.paid_through + rng.randint(5, 60), _MEMBERSHIP, patient)

    def _end_membership(self, day: int, patient: Patient, _: Any) -> None:
        holdings = patient.holdings
        assert holdings is not None and self._profile.memberships is not None
        membership = holdings.membership
        if membership is None or membership.cancelled or not membership.start < day:
            return
        if not membership.active_on(day):
            return
        membership.cancelled = True
        data = {"membership_id": membership.membership_id}
        self._emit(self._second(7, 23), patient, "membership.cancelled", h.PORTAL, data)
        if self._rng.random() < self._profile.memberships.rejoin:
            self._schedule(membership.paid_through + self._rng.randint(5, 60), _MEMBERSHIP, patient)

    def _months_after(self, day: int, months: int) -> int:
        return self._index(add_months(self._start + timedelta(days=day), months))

    # -- the year's preventive care ----------------------------------------------------------

    def _plan_year(self, day: int, patient: Patient, _: Any) -> None:
        """Schedule the rest of this calendar year's checkups and assessments."""
        if day >= patient.churn_day:
            return
        rng, habit = self._rng, patient.habit
        year = (self._start + timedelta(days=day)).year
        first, end = self._index(date(year, 1, 1)), self._index(date(year + 1, 1, 1))
        left = (end - day) / (end - first)
        if rng.random() < habit.wellness_per_year * left:  # once per calendar year at most
            self._checkup_between(day, end, patient, "annual_wellness")
        if rng.random() < habit.flu_shot_per_year:  # peaks in autumn
            flu_day = first + int(rng.gauss(h.FLU_SEASON_PEAK_DOY, h.FLU_SEASON_SPREAD_DAYS))
            if day < flu_day < end:
                self._schedule(flu_day, _CHECKUP, patient, "vaccination")
        for kind, per_year in (
            ("vaccination", self._profile.other_vaccines_per_year),
            ("screening", habit.screenings_per_year),
            ("dental_cleaning", habit.dental_per_year),
        ):
            for _ in range(self._count(per_year * left)):
                self._checkup_between(day, end, patient, kind)
        for month in (1, 4, 7, 10):
            q_first = self._index(date(year, month, 1))
            q_end = self._index(date(year, month + 3, 1) if month < 10 else date(year + 1, 1, 1))
            share = min(1.0, (q_end - day - 1) / (q_end - q_first))
            if share > 0 and rng.random() < habit.assessment_per_quarter * share:
                assess_day = rng.randrange(max(day + 1, q_first), q_end)
                self._schedule(assess_day, _ASSESS, patient)
        self._schedule(end, _PLAN_YEAR, patient)

    def _index(self, when: date) -> int:
        return (when - self._start).days

    def _checkup_between(self, day: int, end: int, patient: Patient, kind: str) -> None:
        if day + 1 < end:
            self._schedule(self._rng.randrange(day + 1, end), _CHECKUP, patient, kind)

    def _checkup(self, day: int, patient: Patient, kind: str) -> None:
        if day >= patient.churn_day:
            return
        data = {"checkup_type": kind}
        self._emit(self._second(8, 17), patient, "checkup.completed", h.EMR, data)
        patient.earn(day, h.CHECKUP_POINTS[kind])

    def _assess(self, day: int, patient: Patient, _: Any) -> None:
        if day >= patient.churn_day:
            return
        data = {"assessment_id": f"asm-{self._seed}-{self._seq + 1}"}
        self._emit(self._second(7, 22), patient, "assessment.completed", h.PORTAL, data)
        patient.earn(day, h.ASSESSMENT_POINTS)


def _money(cents: int) -> str:
    """A decimal string with two decimals, as the contract writes amounts."""
    return f"{cents // 100}.{cents % 100:02d}"
