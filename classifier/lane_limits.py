"""Refresh the lanes' concurrency limits from the live fleet, the VRAM ledger's reservations and the
deployments the hooks' breakers refuse.

Called after each probe round and whenever a response reports a different ledger or set of refused
deployments.
"""

from __future__ import annotations

import time

from aiohttp import web

from classifier.keys import FLEET_KEY, HOOKS_SEEN_KEY, LANES_KEY, LEDGER_KEY, SETTINGS_KEY
from torchrouter_core.capacity import lane_limits
from torchrouter_core.identity import LOCAL_GROUPS


def refresh_lane_limits(app: web.Application) -> None:
    fleet = app[FLEET_KEY]
    overlay, live = fleet.overlay(), fleet.matrix()
    refused = app[HOOKS_SEEN_KEY].refused(time.time())
    reserved = app[LEDGER_KEY].reserved() if LEDGER_KEY in app else None
    settings = app[SETTINGS_KEY]
    # The same fit rule and eviction rules as the hooks' ranker; the classifier has no per-deployment
    # in-flight counts (a model served within the hot window counts as kept, as there).
    limits = lane_limits(
        live,
        overlay,
        LOCAL_GROUPS,
        settings.lane_caps,
        reserved,
        refused,
        now=time.time(),
        rules=settings.eviction,
    )
    app[LANES_KEY].set_limits(limits)
