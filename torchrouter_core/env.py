"""Parsing environment values, shared by the two places that read the environment (the classifier's
``classifier.settings`` and the hooks' ``litellm_hooks.settings``): one error type, one wording."""

from __future__ import annotations


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
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SettingsError(f"{name}={raw!r}: expected a number in [{lo}, {hi}]")
    return value
