"""The read models analysts query (docs/analysts.md), kept in step with the ledger.

Entry points (all take the same ``Settings`` as the rest of careledger)::

    await catch_up(settings)        # apply everything up to the ledger's head -> events
    await rebuild(settings)         # replay the ledger into fresh read models, swapped in
    await follow(settings, stop)    # keep up until ``stop`` (an asyncio.Event) is set

``open_projector`` gives the :class:`~projections.runner.Projector` itself (position,
``catch_up``, ``follow``, ``update_lag``) for callers that need more.
"""

from projections.runner import ProjectionOptions, Projector
from projections.service import catch_up, follow, open_projector, rebuild

__all__ = ["ProjectionOptions", "Projector", "catch_up", "follow", "open_projector", "rebuild"]
