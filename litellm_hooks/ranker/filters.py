"""Filters: each drops the candidates that cannot carry this request, and says why.

A filter is ``(profile, needs) -> reason | None``; the reason is a short stable string (it becomes
an event field and may become a metric label).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from capability_matrix import LockoutState, Profile

if TYPE_CHECKING:
    from litellm_hooks.ranker.cycle import RequestNeeds

Filter = Callable[[Profile, "RequestNeeds"], str | None]


def lockout(profile: Profile, needs: RequestNeeds) -> str | None:
    return None if profile.lockout_state is LockoutState.NONE else f"lockout:{profile.lockout_state.value}"


def context_window(profile: Profile, needs: RequestNeeds) -> str | None:
    return (
        "context_window" if needs.prompt_tokens + needs.max_output_tokens > profile.context_window else None
    )


def tools(profile: Profile, needs: RequestNeeds) -> str | None:
    return "no_tools" if needs.needs_tools and not profile.supports_tools else None


def modality(profile: Profile, needs: RequestNeeds) -> str | None:
    # An image sent to a text-only model is not an error there: the model answers as if it saw it.
    missing = sorted(needs.modalities - profile.input_modalities)
    return f"modality:{missing[0]}" if missing else None


DEFAULT_FILTERS: tuple[Filter, ...] = (lockout, modality, context_window, tools)
