"""Whether a profile can take work now: the rules lane capacity and the ranker share (pure).

One rule per fact, each ``-> reason | None`` (``None``: usable on that count). The reason strings are
stable: they appear in ``route_selected`` events (``rejected``) and may become metric labels.

- :func:`locked_out` -- a lockout (``codex``, ``auth``, ``budget``) in force: ``"lockout:<state>"``.
- :func:`unreachable` -- a local profile whose host did not answer its last ``/api/ps`` poll, or was not
  observed yet (warm state ``unknown``): ``"host_unreachable"``. Work sent there waits on a connect timeout.
- :func:`cannot_load` -- a cold local profile that cannot be loaded now without evicting anything: more
  than the host's free GPU memory, or the host already holds ``max_loaded_models`` models:
  ``"no_room"``. Resident (warm, hot) profiles and cloud profiles always pass.

:func:`host_rooms` derives what each host has left (free GPU memory from the live overlay, else its
declared capacity; model slots left under ``max_loaded_models``), less what the VRAM ledger
(:mod:`torchrouter_core.ledger`) has reserved there for loads not yet listed by ``/api/ps``.
``torchrouter_core.capacity`` packs cold profiles into that room across lanes; the ranker checks each
candidate against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from capability_matrix.live import LiveOverlay
from capability_matrix.model import LockoutState, Matrix, Profile, WarmState
from torchrouter_core.ledger import HostLedger

RESIDENT = (WarmState.WARM, WarmState.HOT)


@dataclass(frozen=True, slots=True)
class HostRoom:
    """What one host can still load: free GPU memory (GB) and model slots (``max_loaded_models`` left)."""

    free_gb: float
    model_slots: int


def resident_models(matrix: Matrix) -> dict[str, frozenset[str]]:
    """Host id -> the model names resident there (live warm state ``warm`` or ``hot``)."""
    resident: dict[str, set[str]] = {}
    for profile in matrix.profiles.values():
        if profile.is_local and profile.warm_state in RESIDENT:
            resident.setdefault(profile.host_id, set()).add(profile.model)
    return {host_id: frozenset(models) for host_id, models in resident.items()}


def host_rooms(
    matrix: Matrix, overlay: LiveOverlay, reserved: Mapping[str, HostLedger] | None = None
) -> dict[str, HostRoom]:
    """Host id -> its room now. Resident models are counted once per model name (Ollama loads one copy);
    ``reserved`` (host id -> the ledger's view, from :meth:`Ledger.view` with the same resident models)
    takes its GB and its pending models off the room."""
    resident = resident_models(matrix)
    rooms: dict[str, HostRoom] = {}
    for host_id, host in matrix.hosts.items():
        memory = overlay.memory.get(host_id)
        free_gb = memory.free_gb if memory is not None else host.gpu_memory_gb
        slots = host.max_loaded_models - len(resident.get(host_id, ()))
        held = reserved.get(host_id) if reserved is not None else None
        if held is not None:
            free_gb, slots = max(0.0, free_gb - held.reserved_gb), slots - held.pending_models
        rooms[host_id] = HostRoom(free_gb, slots)
    return rooms


def locked_out(profile: Profile) -> str | None:
    return None if profile.lockout_state is LockoutState.NONE else f"lockout:{profile.lockout_state.value}"


def unreachable(profile: Profile) -> str | None:
    return "host_unreachable" if profile.is_local and profile.warm_state is WarmState.UNKNOWN else None


def cannot_load(profile: Profile, room: HostRoom | None) -> str | None:
    if not profile.is_local or profile.warm_state is not WarmState.COLD:
        return None
    if room is None or room.model_slots <= 0 or profile.vram_gb > room.free_gb:
        return "no_room"
    return None


def unusable(profile: Profile, rooms: Mapping[str, HostRoom]) -> str | None:
    """The first rule that rules ``profile`` out, in the order above; ``None`` when it is usable."""
    return locked_out(profile) or unreachable(profile) or cannot_load(profile, rooms.get(profile.host_id))
