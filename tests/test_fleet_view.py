"""FleetView: the live matrix is rebuilt only when an input that can change it changed."""

from __future__ import annotations

from capability_matrix import (
    DEFAULT_MATRIX_PATH,
    FleetView,
    HostObservation,
    LoadedModel,
    LockoutState,
    MatrixStore,
    WarmState,
)
from torchrouter_core.spend import DailySpend

HOST = "matthew-100.86.174.11"
KEY = f"{HOST}/ollama/qwen3:8b"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def view(budget_usd: float | None = None, spend: DailySpend | None = None) -> tuple[FleetView, Clock]:
    clock = Clock()
    spend = spend or DailySpend()
    return FleetView(
        MatrixStore(DEFAULT_MATRIX_PATH), daily_budget_usd=budget_usd, spend_today=spend.today, clock=clock
    ), clock


def poll(fleet: FleetView, at: float, *models: str) -> None:
    loaded = tuple(LoadedModel(m, 1, None) for m in models)
    fleet.on_observations({HOST: HostObservation(HOST, True, loaded, observed_at=at)})


def test_cached_until_an_input_changes() -> None:
    fleet, clock = view()
    poll(fleet, clock.now, "qwen3:8b")
    first = fleet.matrix()
    assert first.profiles[KEY].warm_state is WarmState.WARM
    assert fleet.matrix() is first  # nothing changed: the same object, no rebuild
    clock.now += 1
    fleet.served(KEY)  # first answer: warm -> hot
    hot = fleet.matrix()
    assert hot is not first and hot.profiles[KEY].warm_state is WarmState.HOT
    clock.now += 1
    fleet.served(KEY)  # again, before any new poll and within the hot window: nothing can change
    assert fleet.matrix() is hot


def test_an_answer_after_a_poll_that_missed_the_model_leaves_it_cold_until_a_poll_lists_it() -> None:
    fleet, clock = view()
    poll(fleet, clock.now, "qwen3:8b")
    clock.now += 1
    fleet.served(KEY)
    clock.now += 1
    poll(fleet, clock.now)  # this poll lists nothing on the host
    assert fleet.matrix().profiles[KEY].warm_state is WarmState.COLD
    clock.now += 1
    fleet.served(KEY)  # it answered, but /api/ps is the residency source (issue #9): still cold
    assert fleet.matrix().profiles[KEY].warm_state is WarmState.COLD
    clock.now += 1
    poll(fleet, clock.now, "qwen3:8b")  # the next poll lists it, and it answered recently: hot
    assert fleet.matrix().profiles[KEY].warm_state is WarmState.HOT


def test_auth_lockouts_apply_and_clear() -> None:
    fleet, _ = view()
    cloud = "openai-api/openai/gpt-4o-mini"
    fleet.set_auth_lockouts({cloud: "provider answered 401"})
    assert fleet.matrix().profiles[cloud].lockout_state is LockoutState.AUTH
    fleet.set_auth_lockouts({})
    assert fleet.matrix().profiles[cloud].lockout_state is LockoutState.NONE


def test_spend_reaching_the_budget_locks_the_cloud_until_the_next_utc_day() -> None:
    spend = DailySpend()
    fleet, clock = view(budget_usd=1.0, spend=spend)
    cloud = "openai-api/openai/gpt-4o-mini"
    first = fleet.matrix(clock.now)
    assert fleet.budget_reason(clock.now) is None
    spend.add(2.0, clock.now)
    assert fleet.budget_reason(clock.now) is not None
    locked = fleet.matrix(clock.now)
    assert locked is not first and locked.profiles[cloud].lockout_state is LockoutState.BUDGET
    assert locked.profiles[KEY].lockout_state is LockoutState.NONE  # local profiles cost nothing
    next_day = clock.now + 86400
    assert fleet.budget_reason(next_day) is None
    assert fleet.matrix(next_day).profiles[cloud].lockout_state is LockoutState.NONE


def test_a_tiny_budget_and_spend_are_shown_not_rounded_away() -> None:
    spend = DailySpend()
    fleet, clock = view(budget_usd=0.00001, spend=spend)
    spend.add(0.0000156, clock.now)
    reason = fleet.budget_reason(clock.now)
    assert reason == "daily cloud spend 1.56e-05 USD passed the budget of 1e-05 USD", reason
    spend.add(2.5, clock.now)
    assert "spend 2.50 USD passed" in str(fleet.budget_reason(clock.now))


def test_a_spend_just_over_a_small_budget_is_not_rounded_to_look_otherwise() -> None:
    spend = DailySpend()
    fleet, clock = view(budget_usd=0.0245, spend=spend)
    spend.add(0.0253, clock.now)
    assert fleet.budget_reason(clock.now) == "daily cloud spend 0.0253 USD passed the budget of 0.0245 USD"


def test_the_overlay_keeps_residency_times_and_every_size_seen() -> None:
    """What the eviction rules read: when each model was first listed (None for the first poll's), and
    every size_vram seen, kept after the model unloads (its next load's claim)."""
    fleet, clock = view()
    poll(fleet, clock.now, "qwen3:8b")
    clock.now += 2
    fleet.on_observations(
        {
            HOST: HostObservation(
                HOST, True, (LoadedModel("qwen3:8b", 1, None), LoadedModel("big", 3 << 30, None)), 1002.0
            )
        }
    )
    resident = fleet.overlay().resident[HOST]
    assert resident["qwen3:8b"].since is None and resident["big:latest"].since == 1002.0
    assert resident["big:latest"].gb == 3.0
    clock.now += 2
    poll(fleet, clock.now)  # both unloaded
    overlay = fleet.overlay()
    assert overlay.resident[HOST] == {} and overlay.observed_gb[(HOST, "big")] == 3.0
