"""The ranking cycle compiled for the hooks' hot path: :func:`~torchrouter_core.ranker.cycle.rank` with the
default filters and the built-in scorers, same answers, a fraction of the cost.

:func:`rank` (``cycle.py``) is the readable cycle: every filter and scorer a call per candidate over a
:class:`FleetSnapshot` built per request. Per request most of that work repeats: the live matrix and the
overlay change only when a poll or an answer changes them, and so do most filter verdicts. This module
splits the cycle along that line:

- **Per live matrix and overlay** (:class:`Compiled`, kept for the last pair seen, by identity): one record
  per profile (slots, locality, warm state, context window, the static verdicts' inputs, the prompt-rate
  denominator, the declared load time, the memory claim) and each host's free memory and model slots as
  the poll sees them (headroom taken off).
- **Per group and request shape** (the deployment keys, the modalities, whether tools are needed): which
  deployments are known, and each one's static verdict in the filters' order (``modality:*`` before the
  context check, then ``no_tools``, ``lockout:*``, ``host_unreachable``).
- **Per request**: the context check, breakers, room (reservations applied per host at most once;
  :func:`~torchrouter_core.usability.place`'s eviction walk once per host, and only when a cold candidate
  does not fit in free memory: :func:`_walk`), then the scores of the survivors, inline in the same loop,
  and the pick. The scores are kept in columns; score dicts for the event are built on demand
  (:class:`Ranking`).

Same rules, same arithmetic in the same order as the filters and scorers, so the same picks, scores and
reasons; ``tests/test_ranker.py::test_the_compiled_cycle_answers_as_rank_does`` checks it over random
fleets. Weights naming a scorer that is not built in fall back to :func:`rank`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from capability_matrix.live import LiveOverlay
from capability_matrix.model import LockoutState, Matrix, Profile, WarmState
from torchrouter_core.eviction import EvictionRules
from torchrouter_core.ledger import EPS_GB, HostLedger
from torchrouter_core.memory import claim_gb
from torchrouter_core.ranker import scorers
from torchrouter_core.ranker.interfaces import FleetSnapshot, NoCandidate, Ranking, RequestNeeds
from torchrouter_core.usability import (
    FITS,
    ChargeFn,
    Placement,
    Resident,
    ResidentInfo,
    resident_infos,
    resident_profiles,
)

BUILT_IN: Final = frozenset({"ttft", "quality", "speed", "warm", "idle"})
_EMPTY: Final[frozenset[str]] = frozenset()
_CLOUD, _RESIDENT, _COLD, _UNKNOWN = 0, 1, 2, 3
_MAX_GROUPS = 256  # group shapes kept per compiled matrix (deployment subsets x request shapes)


class _Cand:
    """One profile, as much of its cycle as the live matrix and overlay decide."""

    __slots__ = (
        "claim",
        "host_id",
        "key",
        "load_default",
        "lockout",
        "modalities",
        "model",
        "profile",
        "prompt_prior",
        "quality",
        "quality_clamped",
        "raw_slots",
        "slots",
        "speed",
        "state",
        "tools",
        "warm",
        "window",
    )

    def __init__(
        self, profile: Profile, raw_slots: int, observed_gb: Mapping[tuple[str, str], float]
    ) -> None:
        self.profile = profile
        self.key = profile.key
        self.host_id = profile.host_id
        self.model = profile.model
        warm = profile.warm_state
        if not profile.is_local:
            self.state = _CLOUD
        elif warm is WarmState.COLD:
            self.state = _COLD
        elif warm in (WarmState.WARM, WarmState.HOT):
            self.state = _RESIDENT
        else:
            self.state = _UNKNOWN
        self.window = profile.context_window
        self.modalities = profile.input_modalities
        self.tools = profile.supports_tools
        self.lockout = (
            None if profile.lockout_state is LockoutState.NONE else f"lockout:{profile.lockout_state.value}"
        )
        self.raw_slots = raw_slots
        self.slots = max(1, raw_slots)
        self.prompt_prior = scorers.prompt_prior_s_per_token(profile)
        self.quality = profile.quality_score
        q = profile.quality_score
        self.quality_clamped = 0.0 if q < 0.0 else 1.0 if q > 1.0 else q
        self.speed = profile.speed_score
        self.warm = scorers.warm(profile, _NO_FLEET)  # reads the profile only
        self.load_default = scorers.load_estimate_s(profile)
        self.claim = claim_gb(profile, observed_gb) if self.state == _COLD else 0.0

    def static_reason(self, modalities: frozenset[str], needs_tools: bool) -> tuple[str | None, str | None]:
        """(the reason before the context check, the reason after it) for this request shape."""
        missing = sorted(modalities - self.modalities)
        before = f"modality:{missing[0]}" if missing else None
        after = "no_tools" if needs_tools and not self.tools else self.lockout
        if after is None and self.state == _UNKNOWN:
            after = "host_unreachable"
        return before, after


_NO_FLEET: Final = FleetSnapshot()


_Row = tuple[str, int, int, str, str, float, float, float, int, float, "_Cand"]


@dataclass
class _Group:
    """One group's deployments for one request shape: those no request of this shape can use (a missing
    modality: the reason whatever the size), those only the context check can reject first (else their
    static reason: tools, lockout, unreachable), and the rest, in the deployments' order."""

    always: dict[str, str]
    unless_too_big: list[tuple[_Cand, str]]
    cands: list[_Cand]
    unknown: tuple[str | None, ...]
    known: int
    # the per-candidate loop's reads, as one tuple per candidate (unpacked at once: cheaper than 10
    # attribute reads a candidate on the hot path)
    rows: list[_Row] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = [
            (c.key, c.state, c.window, c.host_id, c.model, c.claim, c.load_default, c.prompt_prior, c.slots,
             c.quality_clamped, c)
            for c in self.cands
        ]  # fmt: skip


@dataclass
class Compiled:
    """The part of the cycle one live matrix and overlay decide (see the module docstring)."""

    matrix: Matrix
    overlay: LiveOverlay
    cands: dict[str, _Cand]
    host_base: dict[str, tuple[float, int]]  # host -> (free GB less headroom, model slots), per the poll
    resident: dict[str, dict[str, list[Profile]]]  # host -> resident model -> its profiles
    groups: dict[tuple[object, ...], _Group] = field(default_factory=dict)
    infos: dict[str, tuple[ResidentInfo, ...]] = field(default_factory=dict)  # host -> residents, in order

    def infos_of(self, host_id: str) -> tuple[ResidentInfo, ...]:
        found = self.infos.get(host_id)
        if found is None:
            found = resident_infos(host_id, self.resident.get(host_id, {}), self.overlay)
            self.infos[host_id] = found
        return found

    @classmethod
    def build(cls, matrix: Matrix, overlay: LiveOverlay) -> Compiled:
        observed = overlay.observed_gb
        cands: dict[str, _Cand] = {}
        hosts = matrix.hosts
        for key, profile in matrix.profiles.items():
            cands[key] = _Cand(profile, matrix.parallel_slots(profile), observed)
        resident = resident_profiles(matrix)
        base: dict[str, tuple[float, int]] = {}
        for host_id, host in hosts.items():
            memory = overlay.memory.get(host_id)
            free = (memory.free_gb if memory is not None else host.gpu_memory_gb) - host.gpu_overhead_gb
            base[host_id] = (free, host.max_loaded_models - len(resident.get(host_id, ())))
        return cls(matrix, overlay, cands, base, resident)

    def group(self, keys: Sequence[str | None], needs: RequestNeeds) -> _Group:
        shape = (tuple(keys), needs.modalities, needs.needs_tools)
        found = self.groups.get(shape)
        if found is not None:
            return found
        always: dict[str, str] = {}
        unless_too_big: list[tuple[_Cand, str]] = []
        clean: list[_Cand] = []
        unknown: list[str | None] = []
        for key in keys:
            cand = self.cands.get(key) if key is not None else None
            if cand is None:
                unknown.append(key)
                continue
            before, after = cand.static_reason(needs.modalities, needs.needs_tools)
            if before is not None:
                always[cand.key] = before
            elif after is not None:
                unless_too_big.append((cand, after))
            else:
                clean.append(cand)
        made = _Group(always, unless_too_big, clean, tuple(unknown), len(keys) - len(unknown))
        if len(self.groups) >= _MAX_GROUPS:
            self.groups.clear()
        self.groups[shape] = made
        return made


_last: Compiled | None = None


def compiled(matrix: Matrix, overlay: LiveOverlay) -> Compiled:
    """The compiled cycle for this live matrix and overlay (rebuilt when either is a new object)."""
    global _last
    last = _last
    if last is not None and last.matrix is matrix and last.overlay is overlay:
        return last
    _last = Compiled.build(matrix, overlay)
    return _last


class Decision(NamedTuple):
    """What :func:`decide` answers: the ranking (or the typed "nothing left"), the pick's placement, and
    the deployments the matrix does not know."""

    ranking: Ranking | None
    no_candidate: NoCandidate | None
    placement: Placement | None
    unknown: tuple[str | None, ...]
    known: int


_NO_PROMPTS: Final[Mapping[str, float]] = {}


def decide(
    group: str,
    keys: Sequence[str | None],
    needs: RequestNeeds,
    *,
    matrix: Matrix,
    overlay: LiveOverlay,
    in_flight: Mapping[str, int],
    reserved: Mapping[str, HostLedger] | None,
    weights: Mapping[str, float],
    service_s: Mapping[str, float],
    load_s: Mapping[str, float],
    breakers: Mapping[str, str] | None,
    now: float | None,
    rules: EvictionRules,
    evicted_at: Mapping[tuple[str, str], float] | None,
    charge: ChargeFn | None,
    loading_s: Mapping[str, float] | None = None,
    prompt_s_per_token: Mapping[str, float] | None = None,
) -> Decision:
    """One cycle, as :func:`~torchrouter_core.ranker.select.select` would run :func:`rank` over its
    snapshot (same inputs, same answers). Raises nothing: a cycle with nothing left answers its
    :class:`NoCandidate`."""
    t0 = time.perf_counter()
    plan = compiled(matrix, overlay)
    grp = plan.group(keys, needs)
    size = needs.prompt_tokens + needs.max_output_tokens
    prompt_tokens = needs.prompt_tokens
    # the filters, in DEFAULT_FILTERS' order: modality, context window, tools, lockout, reachable (static
    # per request shape, _Group), then breaker and room per candidate below
    rejected = dict(grp.always)
    for cand, after in grp.unless_too_big:
        rejected[cand.key] = "context_window" if size > cand.window else after
    host_base = plan.host_base
    quick: dict[str, tuple[float, int, frozenset[str]]] = {}  # host -> room without residents, this request
    walks: dict[str, list[_Step]] = {}  # host -> the eviction walk's steps, this request
    evicting: dict[str, frozenset[str]] | None = None
    if reserved:
        for h, ledger in reserved.items():
            if ledger.evicting and h in host_base:
                evicting = evicting or {}
                evicting[h] = ledger.evicting
    check_breakers = bool(breakers)
    # scoring: the weights' shares, and the survivors' scores in aligned columns (no per-candidate
    # containers: nothing for the GC to track)
    names, shares = _shares(weights)
    unload_s = rules.unload_s
    service_get, load_get, flight_get = service_s.get, load_s.get, in_flight.get
    per_token_get = (prompt_s_per_token or _NO_PROMPTS).get  # observed, else the row's prior (prompt_prior)
    default_service, cloud_first = scorers.DEFAULT_SERVICE_S, scorers.CLOUD_FIRST_TOKEN_S
    ref = scorers.TTFT_REFERENCE_S
    out_keys: list[str] = []
    out_scores: list[float] = []
    add_key, add_score = out_keys.append, out_scores.append
    ttft_quality = names == _TTFT_QUALITY
    share_t = share_q = 0.0
    if ttft_quality:
        t_column: list[float] = []
        q_column: list[float] = []
        columns = [t_column, q_column]
        add_t, add_q = t_column.append, q_column.append
        share_t, share_q = shares
    else:
        columns = [[] for _ in names]
    best: _Cand | None = None
    best_victims, best_score, best_key, best_ttft = _NO_VICTIMS, -1.0, "", 0.0
    resident_state, cloud_state = _RESIDENT, _CLOUD  # locals: read per candidate
    for key, state, window, host_id, model, claim, load_default, prompt_prior, slots, q, cand in grp.rows:
        if size > window:
            rejected[key] = "context_window"
            continue
        if check_breakers and key in breakers:  # type: ignore[operator]
            rejected[key] = breakers[key]  # type: ignore[index]
            continue
        # -- room, and the expected time to first token (scorers.estimated_ttft_s, same arithmetic)
        charge_s = 0.0
        victims = (
            _NO_VICTIMS  # the placement's victims (FITS: none); its Placement is built for the pick only
        )
        if state == resident_state:
            if evicting:
                going = evicting.get(host_id)
                if going is not None and model in going:
                    rejected[key] = "evicting"
                    continue
            prompt = prompt_tokens * per_token_get(key, prompt_prior)
            ahead = flight_get(key, 0) - slots + 1
            if loading_s and key in loading_s:  # listed resident, still loading (scorers: wait + load + ...)
                wait = (ahead if ahead > 0 else 0) * service_get(key, default_service) / slots
                ttft = wait + loading_s[key] + prompt
            else:
                ttft = ahead * service_get(key, default_service) / slots + prompt if ahead > 0 else prompt
        elif state == cloud_state:
            ttft = cloud_first + prompt_tokens * prompt_prior
        else:  # cold (unknown ones never get here: host_unreachable)
            room = quick.get(host_id)
            if room is None:
                found = host_base.get(host_id)
                if found is None:  # an undeclared host: no room known
                    rejected[key] = "no_room"
                    continue
                free, host_slots = found
                held = reserved.get(host_id) if reserved else None
                pending = _EMPTY
                if held is not None:
                    free += held.freed_gb - held.reserved_gb
                    host_slots += len(held.evicting) - held.pending_models
                    pending = held.pending
                room = (max(0.0, free), host_slots, pending)
                quick[host_id] = room
            if not (model in room[2] or (claim <= room[0] + EPS_GB and room[1] >= 1)):
                # usability.place's walk; its steps for this host are worked out once per request
                steps = walks.get(host_id)
                if steps is None:
                    steps = walks[host_id] = _walk(
                        plan, host_id, room, reserved, in_flight, now, rules, evicted_at, charge
                    )
                fitted = None
                for step_free, step_slots, step_victims, step_charge in steps:
                    if claim <= step_free and step_slots >= 1:
                        fitted, charge_s = step_victims, step_charge
                        break
                if fitted is None:
                    rejected[key] = "no_room"
                    continue
                victims = fitted
            prompt = prompt_tokens * per_token_get(key, prompt_prior)
            ahead = flight_get(key, 0) - slots + 1
            wait = (ahead if ahead > 0 else 0) * service_get(key, default_service) / slots
            load = loading_s.get(key) if loading_s else None  # scorers: some left of a load under way
            if not load:
                load = load_get(key, load_default)
            if victims:
                ttft = wait + load + unload_s * len(victims) + prompt
            else:
                ttft = wait + load + unload_s * 0 + prompt
        # -- the scores (clamped, weighted) and the pick (highest score, ties by key)
        t_value = ref / (ref + (ttft + charge_s))
        t_value = 0.0 if t_value < 0.0 else 1.0 if t_value > 1.0 else t_value
        if ttft_quality:
            add_t(t_value)
            add_q(q)
            score = 0.0 + t_value * share_t + q * share_q
        else:
            score = 0.0
            for column, name, share in zip(columns, names, shares, strict=True):
                value = _term(name, cand, t_value, flight_get)
                column.append(value)
                score += value * share
        add_key(key)
        add_score(score)
        if score > best_score or (score == best_score and key < best_key):
            best, best_victims, best_score, best_key, best_ttft = cand, victims, score, key, ttft
    t1 = time.perf_counter()
    if best is None:
        return Decision(None, NoCandidate(group, rejected), None, grp.unknown, grp.known)
    ranking = Ranking(
        chosen=best.profile,
        rejected=rejected,
        keys=out_keys,
        score_list=out_scores,
        term_names=names,
        term_values=columns,
        timings_ms={"filter_score_pick": (t1 - t0) * 1e3},
        ttft_s={best_key: round(best_ttft, 4)},
    )
    placement = _placement(best_victims) if best_victims else FITS
    return Decision(ranking, None, placement, grp.unknown, grp.known)


_Victim = tuple[ResidentInfo, float]  # a resident the walk would evict, and its charge (s)
_Step = tuple[float, int, tuple[_Victim, ...], float]  # free GB (+ EPS), model slots, victims so far, charge
_NO_VICTIMS: tuple[_Victim, ...] = ()


def _placement(victims: tuple[_Victim, ...]) -> Placement:
    """The pick's placement: its victims as :class:`Resident` (what ``ResidentInfo.victim`` makes)."""
    return Placement(tuple(Resident(info.model, info.gb, None, charge_s) for info, charge_s in victims))


def _walk(
    plan: Compiled,
    host_id: str,
    room: tuple[float, int, frozenset[str]],
    reserved: Mapping[str, HostLedger] | None,
    in_flight: Mapping[str, int],
    now: float | None,
    rules: EvictionRules,
    evicted_at: Mapping[tuple[str, str], float] | None,
    charge: ChargeFn | None,
) -> list[_Step]:
    """:func:`~torchrouter_core.usability.place`'s walk over a host's residents, for every claim at
    once: the room after each victim, up to the first model that must stay (or the last resident). A
    claim's placement is the first step it fits in; none: no room."""
    steps: list[_Step] = []
    if not rules.enabled:
        return steps
    held = reserved.get(host_id) if reserved else None
    evicting, leased = (held.evicting, held.leased) if held is not None else (_EMPTY, _EMPTY)
    free, slots = room[0] + EPS_GB, room[1]
    victims: tuple[_Victim, ...] = ()
    charge_s: float = 0  # Placement.charge_s's sum, in the same order (it starts from int 0 too)
    flight_get = in_flight.get
    infos = plan.infos.get(host_id)
    for info in infos if infos is not None else plan.infos_of(host_id):
        # ResidentInfo.keep, inline (this is the hot path's inner loop; the random fleets of
        # tests/test_ranker.py hold it to the plain cycle's answers): skipped, refused, or a victim
        model = info.model
        if model in evicting:
            continue
        busy = False
        for key in info.keys:
            if flight_get(key, 0) > 0:
                busy = True
                break
        if busy:
            continue
        if model in leased or info.hot:
            break
        if now is not None:
            since = info.since
            if since is not None and now - since < rules.min_residency_s:
                break
            if evicted_at:
                at = evicted_at.get((host_id, model))
                if at is not None and now - at < rules.hold_s:
                    break
        # ResidentInfo.victim's charge; its Resident is built for the pick's placement only (_placement)
        if charge is None:
            victim_charge = 0.0
        else:
            expires_at = info.expires_at
            victim_charge = charge(
                info.profile, None if expires_at is None or now is None else expires_at - now
            )
        victims = (*victims, (info, victim_charge))
        free += info.gb
        slots += 1
        charge_s += victim_charge
        steps.append((free, slots, victims, charge_s))
    return steps


_TTFT_QUALITY: Final = ("ttft", "quality")
_weights_seen: dict[tuple[tuple[str, float], ...], tuple[tuple[str, ...], tuple[float, ...]]] = {}


def _shares(weights: Mapping[str, float]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The terms and each one's share of the total weight (as :func:`rank` computes them), worked out
    once per set of weights (a handful: one per tier)."""
    items = tuple(weights.items())
    seen = _weights_seen.get(items)
    if seen is not None:
        return seen
    total_weight = sum(weights.values()) or 1.0
    made = tuple(weights), tuple(w / total_weight for w in weights.values())
    if len(_weights_seen) > 64:
        _weights_seen.clear()
    _weights_seen[items] = made
    return made


def _term(name: str, cand: _Cand, t_value: float, flight_get: Callable[[str, int], int]) -> float:
    """One built-in scorer's clamped value (``scorers.py``'s formulas, here per compiled candidate)."""
    if name == "ttft":
        return t_value
    if name == "quality":
        value = cand.quality
    elif name == "speed":
        value = cand.speed
    elif name == "warm":
        value = cand.warm
    else:  # idle: 1 - in flight / slots (FleetSnapshot.utilization)
        busy, slots = flight_get(cand.key, 0), cand.raw_slots
        value = 1.0 - ((0.0 if busy == 0 else 1.0) if slots <= 0 else busy / slots)
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value
