"""The ranking cycle: filter -> weighted score -> pick, pure and synchronous.

``rank()`` (:mod:`.cycle`) composes the stages in :mod:`.filters`, :mod:`.scorers` and :mod:`.pickers`
and times each one; the types they share are in :mod:`.interfaces`. The hooks' ``select()``
(:mod:`.select`) runs the same cycle compiled (:mod:`.compiled`), with the same answers. Nothing here
imports LiteLLM, aiohttp or prometheus_client.
"""

from torchrouter_core.ranker.cycle import rank
from torchrouter_core.ranker.interfaces import (
    Filter,
    FleetSnapshot,
    NoCandidate,
    Picker,
    Ranking,
    RankOutcome,
    RequestNeeds,
    Scorer,
)

__all__ = [
    "Filter",
    "FleetSnapshot",
    "NoCandidate",
    "Picker",
    "RankOutcome",
    "Ranking",
    "RequestNeeds",
    "Scorer",
    "rank",
]
