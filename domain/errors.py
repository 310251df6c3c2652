"""The ledger's exceptions: a small tree under :class:`LedgerError`.

Each one names a business reason to refuse an interaction. The application turns them into
dead letters with :attr:`LedgerError.code` as the machine-readable reason, so codes are stable
and never carry patient data.
"""


class LedgerError(Exception):
    """Raised when an interaction cannot be applied to the ledger."""

    code = "ledger_error"


class UnknownProgram(LedgerError):
    """Raised when an event names a program this ledger does not run."""

    code = "unknown_program"


class SelfReferral(LedgerError):
    """Raised when a patient refers themselves."""

    code = "self_referral"


class UnknownRedemption(LedgerError):
    """Raised when a cancellation names a redemption the account never made."""

    code = "unknown_redemption"


class RedemptionNotCancellable(LedgerError):
    """Raised when a cancellation names a rejected or already cancelled redemption."""

    code = "redemption_not_cancellable"


class UnknownInteraction(LedgerError):
    """Raised when a void names an interaction the account never accepted."""

    code = "unknown_interaction"


class InteractionNotVoidable(LedgerError):
    """Raised when a void names an interaction that is already voided or cannot be voided."""

    code = "interaction_not_voidable"


class CurrencyMismatch(LedgerError):
    """Raised when a payment is not in the program's currency."""

    code = "currency_mismatch"


class IdConflict(LedgerError):
    """Raised when an interaction reuses a (source, id) the ledger accepted with other content."""

    code = "id_conflict"


class UnknownPartner(LedgerError):
    """Raised when a purchase or redemption names a partner the program does not have."""

    code = "unknown_partner"


class UnknownReward(LedgerError):
    """Raised when a redemption names a reward the program's catalogue does not have."""

    code = "unknown_reward"


class PriceMismatch(LedgerError):
    """Raised when a redemption's points or a membership's amount is not the price."""

    code = "price_mismatch"


class MissingPoints(LedgerError):
    """Raised when a free-form redemption (no catalogue) does not say how many points."""

    code = "missing_points"


class UnknownVoucher(LedgerError):
    """Raised when a reward is used with a voucher the account was never issued."""

    code = "unknown_voucher"


class VoucherUsed(LedgerError):
    """Raised when a voucher is used again, or its redemption cancelled after use."""

    code = "voucher_used"


class VoucherExpired(LedgerError):
    """Raised when a voucher is used after its expiry."""

    code = "voucher_expired"


class VoucherCancelled(LedgerError):
    """Raised when a voucher whose redemption was cancelled is used."""

    code = "voucher_cancelled"


class UnknownPlan(LedgerError):
    """Raised when a membership purchase names a plan the program does not sell."""

    code = "unknown_plan"


class UnknownMembership(LedgerError):
    """Raised when a cancellation names a membership the account never had."""

    code = "unknown_membership"


class MembershipNotActive(LedgerError):
    """Raised when a cancelled or lapsed membership is cancelled again."""

    code = "membership_not_active"


class InsufficientCashback(LedgerError):
    """Raised when a payment draws more cashback than the wallet holds."""

    code = "insufficient_cashback"


class InsufficientPrepaid(LedgerError):
    """Raised when a payment draws more prepaid money than the wallet holds."""

    code = "insufficient_prepaid"


class SubjectErased(LedgerError):
    """Raised for an interaction addressed to an account closed by erasure (ADR 0015)."""

    code = "subject_erased"
