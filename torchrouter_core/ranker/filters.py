"""Filters: each drops the candidates that cannot carry this request, and says why.

A filter is a :class:`~torchrouter_core.ranker.interfaces.Filter`: ``(profile, needs, fleet) -> reason |
None``; the reason is a short stable string (it becomes an event field and may become a metric label).
The usability rules (lockout, reachable host, room to load) are :mod:`torchrouter_core.usability`'s, the
same ones lane capacity counts with.
"""

from __future__ import annotations

from capability_matrix.model import Profile, WarmState
from torchrouter_core import usability
from torchrouter_core.ranker.interfaces import Filter, FleetSnapshot, RequestNeeds


def lockout(profile: Profile, needs: RequestNeeds, fleet: FleetSnapshot) -> str | None:
    return usability.locked_out(profile)


def reachable(profile: Profile, needs: RequestNeeds, fleet: FleetSnapshot) -> str | None:
    return usability.unreachable(profile)


def breaker(profile: Profile, needs: RequestNeeds, fleet: FleetSnapshot) -> str | None:
    """An open circuit breaker (the deployment's or its host's), or a half-open one whose trials are all
    taken: ``breaker_open``, ``breaker_half_open``, ``host_breaker_open``, ``host_breaker_half_open``; or a
    deployment this request already tried: ``already_tried``."""
    return fleet.breakers.get(profile.key)


def room(profile: Profile, needs: RequestNeeds, fleet: FleetSnapshot) -> str | None:
    """A cold model that fits neither in free memory nor after evicting idle residents (``no_room``), or
    a resident one that a live reservation is evicting (``evicting``): :func:`usability.cannot_load`'s
    rule, with the snapshot's memoised placement."""
    if fleet.rooms is None:  # no room known for the fleet: not checked
        return None
    if profile.is_local and profile.warm_state is WarmState.COLD:
        return "no_room" if fleet.placement(profile) is None else None
    return usability.cannot_load(profile, fleet.rooms.get(profile.host_id), fleet.observed_gb)


def context_window(profile: Profile, needs: RequestNeeds, fleet: FleetSnapshot) -> str | None:
    return (
        "context_window" if needs.prompt_tokens + needs.max_output_tokens > profile.context_window else None
    )


def tools(profile: Profile, needs: RequestNeeds, fleet: FleetSnapshot) -> str | None:
    return "no_tools" if needs.needs_tools and not profile.supports_tools else None


def modality(profile: Profile, needs: RequestNeeds, fleet: FleetSnapshot) -> str | None:
    # An image sent to a text-only model is not an error there: the model answers as if it had seen it.
    missing = sorted(needs.modalities - profile.input_modalities)
    return f"modality:{missing[0]}" if missing else None


# What a deployment can never do comes first, so a candidate's reason says "never" when it is true (the
# classifier answers LiteLLM's "No deployments available" with 400 for static reasons, 503 for the rest).
DEFAULT_FILTERS: tuple[Filter, ...] = (modality, context_window, tools, lockout, reachable, breaker, room)
