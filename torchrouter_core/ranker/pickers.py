"""Pickers: choose one candidate from the scored list (see ``interfaces.Picker``)."""

from __future__ import annotations

from collections.abc import Sequence

from capability_matrix.model import Profile


def highest_score(scored: Sequence[tuple[Profile, float]]) -> Profile:
    # Ties break on the profile key so the same fleet state always gives the same pick.
    return min(scored, key=lambda item: (-item[1], item[0].key))[0]
