"""Service and cold-load times the ranker learns per deployment, and the loads in progress (pure: values in,
values out).

Moving averages (weight ``alpha`` for each new sample) of a request's service time (its run on a slot as
Ollama timed it, else end - start of a successful call), of a cold load (time to first token of a call
whose pick was ``cold``: the load dominates it) and of a prompt token's evaluation (seconds per token:
Ollama's ``prompt_eval_duration`` over the tokens it evaluated, from prompts of
:data:`MIN_PROMPT_SAMPLE_TOKENS` or more; per token, not per second, so that the mean is that of the
time a prompt takes), per profile key; :func:`~torchrouter_core.ranker.scorers.estimated_ttft_s` reads them
through :class:`~torchrouter_core.ranker.interfaces.FleetSnapshot`. Keys are the matrix's profile keys
(bounded by it); a sample that is not a finite non-negative number is ignored.

Two things a deployment's own samples cannot tell before it has any:

- **Its service time, from its peers.** A deployment never observed takes the service time of the same
  model observed on other hosts, scaled by speed (``service x speed_score`` is the model's work, the
  same on every host), instead of the flat prior: a 32B coder that takes 10 s a request elsewhere is not
  priced at 2 s on a host that has not served it yet. Its own first sample replaces the peers' value.
- **A load still under way.** Ollama lists a model in ``/api/ps`` while it is still loading (its
  scheduler adds the runner to ``loaded`` before the load finishes), so the probe reports a copy resident
  that cannot answer yet. A cold pick starts a load (:meth:`ObservedTimes.started_load`); until that
  deployment answers or fails, :meth:`ObservedTimes.loading_s` gives the load's remaining seconds, which
  the ranker adds to that copy's time to first token, so a burst does not herd onto a copy that is still
  loading as if it were idle and ready. A copy not listed yet is priced at what is left of the load while
  some is left, and at a whole load once it is overdue (something went wrong). A load not heard of within
  twice its expected time is forgotten.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from capability_matrix.model import Profile
from torchrouter_core.ranker.scorers import load_estimate_s

LOAD_FORGET_FACTOR = 2.0  # a load in progress is forgotten after this many times its expected seconds
MIN_SPEED = 0.05  # the floor of a speed_score when scaling a peer's service time (as for the prompt rate)
MIN_PROMPT_SAMPLE_TOKENS = 64  # a shorter prompt's evaluation times its fixed costs more than the rate


@dataclass
class ObservedTimes:
    alpha: float = 0.3
    # What the ranker reads: own observations, and for a deployment never observed its peers' (scaled).
    service_s: dict[str, float] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)
    prompt_s_per_token: dict[str, float] = field(default_factory=dict)  # key -> s per prompt token seen
    own_service: set[str] = field(default_factory=set)  # keys whose service_s is their own
    model_work: dict[str, float] = field(default_factory=dict)  # model -> mean service x speed_score
    loading: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (started, expected s)

    def _blend(self, book: dict[str, float], key: str, sample: float | None) -> None:
        if sample is None or not math.isfinite(sample) or sample < 0:
            return
        old = book.get(key)
        book[key] = sample if old is None else old + self.alpha * (sample - old)

    def record(
        self,
        key: str,
        *,
        service_s: float | None,
        ttft_s: float | None,
        was_cold: bool,
        model: str | None = None,
        peers: Mapping[str, float] | None = None,
        prompt: tuple[int, float] | None = None,
        load_s: float | None = None,
    ) -> None:
        """One successful call on ``key``: when its pick was cold, a load sample (``load_s``, the load as
        Ollama timed it, else its TTFT, mostly the load when it is a stream's first chunk) and no service
        time (its duration is mostly the load); else its service time. It ends any load
        in progress on ``key``. ``model`` and ``peers`` (every profile key serving the same
        model -> its ``speed_score``, ``key`` included) spread the service time to peers never observed.
        ``prompt``: (tokens evaluated, seconds) of its prompt as Ollama timed it, a sample of the seconds
        per prompt token when it evaluated at least :data:`MIN_PROMPT_SAMPLE_TOKENS` tokens (a cold call's
        too: Ollama times the prompt apart from the load)."""
        self.loading.pop(key, None)
        if prompt is not None:
            tokens, seconds = prompt
            if tokens >= MIN_PROMPT_SAMPLE_TOKENS and math.isfinite(seconds) and seconds > 0:
                self._blend(self.prompt_s_per_token, key, seconds / tokens)
        if was_cold:  # its duration is mostly the load: it teaches the load time, not the service time
            self._blend(self.load_s, key, ttft_s if load_s is None else load_s)
            return
        valid = service_s is not None and math.isfinite(service_s) and service_s >= 0
        if key not in self.own_service and valid:
            self.service_s.pop(key, None)  # the peers' value was a prior: its own first sample replaces it
            self.own_service.add(key)
        self._blend(self.service_s, key, service_s)
        if not valid or model is None or not peers:
            return
        assert service_s is not None
        self._blend(self.model_work, model, service_s * max(peers.get(key, 1.0), MIN_SPEED))
        work = self.model_work[model]
        for peer, speed in peers.items():
            if peer not in self.own_service:
                self.service_s[peer] = work / max(speed, MIN_SPEED)

    def load_time_s(self, profile: Profile) -> float:
        """Seconds ``profile``'s model takes to load cold: observed on that deployment, else the prior
        (:func:`~torchrouter_core.ranker.scorers.load_estimate_s`)."""
        seen = self.load_s.get(profile.key)
        return load_estimate_s(profile) if seen is None else seen

    def started_load(self, key: str, now: float, expected_s: float) -> None:
        """A pick of ``key`` while its model was not resident: a load of about ``expected_s`` seconds
        starts now (Unix seconds). A load already under way keeps its start."""
        if key not in self.loading and math.isfinite(expected_s) and expected_s > 0:
            self.loading[key] = (now, expected_s)

    def load_ended(self, key: str) -> None:
        """``key``'s call failed: whatever load it started is not known to be under way any more."""
        self.loading.pop(key, None)

    def loading_s(self, now: float | None) -> dict[str, float]:
        """Profile key -> seconds left of a load in progress (0 once overdue), for the ranker; forgets a
        load past :data:`LOAD_FORGET_FACTOR` times its expected time. Empty without ``now``."""
        if not self.loading or now is None:
            return {}
        left: dict[str, float] = {}
        for key, (started, expected) in list(self.loading.items()):
            elapsed = now - started
            if elapsed > LOAD_FORGET_FACTOR * expected:
                del self.loading[key]
            else:  # never more than the whole load (a clock stepped back)
                left[key] = min(expected, max(0.0, expected - elapsed))
        return left
