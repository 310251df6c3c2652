"""Process tuning every careledger process applies first: the CLI and the rebuild's workers.

It imports only the standard library, so any layer that starts a process of its own (the
projections' rebuild workers) can apply it without depending on the entry points.
"""

from __future__ import annotations

import gc


def tune_garbage_collector() -> None:
    """Collect young objects less often.

    The ledger allocates many short-lived objects per event (parsed payloads, events, entries)
    while holding a large, long-lived aggregate cache; with CPython's default thresholds the
    collector rescans that cache so often that it costs more than the work itself (measured:
    7.5k -> 12.3k events/s on the write path).
    """
    gc.set_threshold(50_000, 20, 100)
