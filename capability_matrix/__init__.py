"""The capability matrix: TorchRouter's fleet contract.

Profile data (`matrix.yaml`), its JSON Schema (`schema.json`), a loader that validates it and reports every
problem (`loader`), a store that hot-reloads it and keeps the last good matrix on a bad edit (`store`), the
pure live overlay of warm states, lockouts and GPU memory (`live`), the fleet probe that observes Ollama's
`/api/ps` and NVML (`probe`, the only I/O), a process's cached live view built from all of them (`view`), and
the drift check against `litellm_config.yaml` (`consistency`).
"""

from capability_matrix.consistency import check_consistency, litellm_model, validate_files
from capability_matrix.live import (
    GpuDevice,
    GpuReading,
    HostMemory,
    HostObservation,
    LiveOverlay,
    LoadedModel,
    Lockout,
    MemorySource,
    ResidentModel,
    auth_lockout,
    budget_lockout,
    build_overlay,
    derive_host_memory,
    derive_warm_states,
    next_auth_lockouts,
    resolve_lockouts,
    sharing_credentials,
    utc_day,
)
from capability_matrix.loader import (
    DEFAULT_MATRIX_PATH,
    SCHEMA_PATH,
    MatrixError,
    Problem,
    load_matrix,
    matrix_schema,
    parse_matrix,
    parse_matrix_text,
)
from capability_matrix.model import (
    BYTES_PER_GB,
    HardwareClass,
    Host,
    LockoutState,
    Matrix,
    Profile,
    Provider,
    WarmState,
    profile_key,
)
from capability_matrix.store import MatrixStore, ReloadingFile, ReloadOutcome, watch
from capability_matrix.view import FleetView

__all__ = [
    "BYTES_PER_GB",
    "DEFAULT_MATRIX_PATH",
    "SCHEMA_PATH",
    "FleetView",
    "GpuDevice",
    "GpuReading",
    "HardwareClass",
    "Host",
    "HostMemory",
    "HostObservation",
    "LiveOverlay",
    "LoadedModel",
    "Lockout",
    "LockoutState",
    "Matrix",
    "MatrixError",
    "MatrixStore",
    "MemorySource",
    "Problem",
    "Profile",
    "Provider",
    "ReloadOutcome",
    "ReloadingFile",
    "ResidentModel",
    "WarmState",
    "auth_lockout",
    "budget_lockout",
    "build_overlay",
    "check_consistency",
    "derive_host_memory",
    "derive_warm_states",
    "litellm_model",
    "load_matrix",
    "matrix_schema",
    "next_auth_lockouts",
    "parse_matrix",
    "parse_matrix_text",
    "profile_key",
    "resolve_lockouts",
    "sharing_credentials",
    "utc_day",
    "validate_files",
    "watch",
]
