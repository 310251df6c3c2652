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
