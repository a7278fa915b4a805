"""The hooks' settings: :class:`HooksSettings` lives in :mod:`torchrouter_core.hooks_settings` (pure, so that
``torchrouter up`` and ``torchrouter validate`` parse it without importing LiteLLM and refuse a bad value
before anything starts); this module keeps the name the hooks import it by."""

from __future__ import annotations

from torchrouter_core.hooks_settings import HooksSettings

__all__ = ["HooksSettings"]
