"""Our hooks with the router's time constants in the fleet's time: the fleet benchmark's TorchRouter.

LiteLLM loads this module (``litellm_settings.callbacks: benchmarks.scaled_hooks.router_hooks``) instead
of ``litellm_hooks`` when the benchmark runs the fleet faster than real time. The router's time constants
are seconds of real time (a cold load 2 s + 0.4 s per GB, exactly the simulated Ollama's at time scale 1;
a service of 2 s before one is observed; prompt tokens per second; the TTFT at which the score is one half;
the hot window during which a model that answered is not evicted; the recent-use window and keep-alive
horizon of the eviction charge), while everything it observes on a fleet at time scale ``s`` is ``s``
times shorter. Unscaled, an unobserved cold load looks ``1/s`` times longer than an observed line of the
same length, and a model that answered counts as hot for ``1/s`` times as many requests. Multiplying the
seconds by ``s`` (dividing the rate) before the hooks run makes the router decide as it would on the same
fleet in real time. ``TORCHROUTER_BENCH_TIME_SCALE`` is ``s``. The eviction rules' own seconds are a
setting (``TORCHROUTER_EVICTION``), which the benchmark scales itself (``bench_fleet.eviction_setting``).

Every constant is looked up before anything changes; a missing one fails the import loudly, so a router
change that renames one is noticed here rather than measured wrongly (``tests/test_bench_fleet.py`` checks
the names too). A new time constant elsewhere is not found by this module: add it to the lists below.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from capability_matrix import live, view
from litellm_hooks import router_hooks
from torchrouter_core import eviction
from torchrouter_core.ranker import scorers

ENV = "TORCHROUTER_BENCH_TIME_SCALE"
SCORER_SECONDS = (
    "LOAD_BASE_S",
    "LOAD_S_PER_GB",
    "DEFAULT_SERVICE_S",
    "CLOUD_FIRST_TOKEN_S",
    "TTFT_REFERENCE_S",
)
SCORER_RATES = ("PROMPT_TOKENS_PER_S",)
EVICTION_SECONDS = ("KEEP_ALIVE_HORIZON_S",)  # read as module globals at call time


def _defaults_slot(fn: Any, name: str) -> tuple[Callable[[], float], Callable[[float], None]]:
    """Get and set the default of ``fn``'s parameter ``name`` (positional or keyword-only)."""
    code = fn.__code__
    kw = fn.__kwdefaults__ or {}
    if name in kw:
        return (lambda: float(kw[name])), (lambda v: kw.__setitem__(name, v))
    positional = code.co_varnames[: code.co_argcount]
    defaults = fn.__defaults__ or ()
    index = positional.index(name) - (len(positional) - len(defaults))
    if index < 0:
        raise ValueError(f"{fn.__qualname__}: {name} has no default")

    def set_default(v: float) -> None:
        values = list(fn.__defaults__)
        values[index] = v
        fn.__defaults__ = tuple(values)

    return (lambda: float(fn.__defaults__[index])), set_default


def _attribute(module: Any, name: str) -> tuple[Callable[[], float], Callable[[float], None]]:
    value = getattr(module, name)
    if not isinstance(value, float):
        raise TypeError(f"{module.__name__}.{name} is {value!r}, not a float")
    return (lambda: float(getattr(module, name))), (lambda v: setattr(module, name, v))


def slots() -> dict[str, tuple[Callable[[], float], Callable[[float], None], bool]]:
    """Every constant this module scales: name -> (get, set, is_rate). Raises if one is missing."""
    found: dict[str, tuple[Callable[[], float], Callable[[float], None], bool]] = {}
    try:
        for name in SCORER_SECONDS + SCORER_RATES:
            found[f"scorers.{name}"] = (*_attribute(scorers, name), name in SCORER_RATES)
        for name in EVICTION_SECONDS:
            found[f"eviction.{name}"] = (*_attribute(eviction, name), False)
        found["view.HOT_WINDOW_S"] = (*_attribute(view, "HOT_WINDOW_S"), False)
        found["live.build_overlay(hot_window_s)"] = (
            *_defaults_slot(live.build_overlay, "hot_window_s"),
            False,
        )
        found["eviction.RecentUse(window_s)"] = (
            *_defaults_slot(eviction.RecentUse.__init__, "window_s"),
            False,
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise RuntimeError(
            f"{__name__}: the router's time constants changed ({exc}); update this module"
        ) from exc
    return found


def scale_constants(scale: float) -> dict[str, float]:
    """Multiply the seconds by ``scale`` and divide the rates by it; answers the new values by name."""
    if not scale > 0:
        raise ValueError(f"{ENV} must be a positive number, got {scale!r}")
    found = slots()
    for get, put, is_rate in found.values():
        put(get() / scale if is_rate else get() * scale)
    return {name: get() for name, (get, _, _) in found.items()}


SCALED = scale_constants(float(os.environ.get(ENV, "1")))

__all__ = ["SCALED", "router_hooks", "scale_constants", "slots"]
