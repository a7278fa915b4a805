"""Our hooks with the ranker's time priors in the simulated fleet's time: the fleet benchmark's TorchRouter.

LiteLLM loads this module (``litellm_settings.callbacks: benchmarks.scaled_hooks.router_hooks``) instead
of ``litellm_hooks`` when the benchmark runs the fleet faster than real time. The ranker's priors are
seconds of real time (a cold load 2 s + 0.4 s per GB, exactly the simulated Ollama's at time scale 1; a
service of 2 s before one is observed; prompt tokens per second; the TTFT at which the score is one half),
while everything it observes on a fleet at time scale ``s`` is ``s`` times shorter. Unscaled, an unobserved
cold load looks ``1/s`` times longer than an observed line of the same length, so the ranker queues where it
would load in real time. Multiplying the priors by ``s`` (dividing the rate) before the hooks load makes the
ranker decide as it would on the same fleet in real time. ``TORCHROUTER_BENCH_TIME_SCALE`` is ``s``.

The names are the ranker's (:mod:`torchrouter_core.ranker.scorers`); a missing one fails the import loudly,
so a ranker change that renames or adds a time constant is noticed here rather than measured wrongly.
"""

from __future__ import annotations

import os

from litellm_hooks import router_hooks
from torchrouter_core.ranker import scorers

SECONDS = ("LOAD_BASE_S", "LOAD_S_PER_GB", "DEFAULT_SERVICE_S", "CLOUD_FIRST_TOKEN_S", "TTFT_REFERENCE_S")
RATES = ("PROMPT_TOKENS_PER_S",)
ENV = "TORCHROUTER_BENCH_TIME_SCALE"


def scale_priors(scale: float) -> dict[str, float]:
    """Multiply the ranker's seconds by ``scale`` and divide its rates by it; answers the new values."""
    if not scale > 0:
        raise ValueError(f"{ENV} must be a positive number, got {scale!r}")
    missing = [n for n in SECONDS + RATES if not isinstance(getattr(scorers, n, None), float)]
    if missing:
        raise RuntimeError(f"torchrouter_core.ranker.scorers has no float {missing}: update {__name__}")
    for name in SECONDS:
        setattr(scorers, name, getattr(scorers, name) * scale)
    for name in RATES:
        setattr(scorers, name, getattr(scorers, name) / scale)
    return {n: getattr(scorers, n) for n in SECONDS + RATES}


SCALED = scale_priors(float(os.environ.get(ENV, "1")))

__all__ = ["SCALED", "router_hooks", "scale_priors"]
