"""The ranking cycle: filter -> weighted score -> pick, pure and synchronous.

``rank()`` composes the stages in :mod:`filters`, :mod:`scorers` and :mod:`pickers` and times each
one. It takes profiles and a :class:`RequestNeeds`, returns a :class:`Ranking`; nothing here imports
LiteLLM, aiohttp or prometheus_client.
"""

from torchrouter_core.ranker.cycle import NoCandidate, Ranking, RequestNeeds, rank
from torchrouter_core.ranker.scorers import FleetLoad

__all__ = ["FleetLoad", "NoCandidate", "Ranking", "RequestNeeds", "rank"]
