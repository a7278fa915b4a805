"""Parsing environment values, shared by the two places that read the environment (the classifier's
``classifier.settings`` and the hooks' ``litellm_hooks.settings``): one error type, one wording."""

from __future__ import annotations

import math


class SettingsError(ValueError):
    """An environment variable holds a value the process cannot use; the message names the variable."""


def parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def parse_float(name: str, raw: str, lo: float | None = None, hi: float | None = None) -> float:
    value = finite_float(raw)
    if value is None:
        raise SettingsError(f"{name}={raw!r}: expected a number (finite: not nan or inf)") from None
    if (lo is not None and (value < lo or (lo >= 0 and not non_negative(value)))) or (
        hi is not None and value > hi
    ):
        raise SettingsError(f"{name}={raw!r}: expected a number in [{lo}, {hi}]")
    return value


def finite_float(raw: str) -> float | None:
    """``raw`` as a finite float, or None: not a number, or NaN or an infinity (``inf``, ``1e400``)."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def non_negative(value: float) -> bool:
    """At least zero and not ``-0`` (a minus sign on a count or a duration is a typo, never meant)."""
    return value >= 0 and math.copysign(1.0, value) > 0


def repeated(names: list[str]) -> str | None:
    """The first name given twice in ``names``, or None."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None
