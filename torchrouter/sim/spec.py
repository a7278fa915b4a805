"""What a simulated fleet looks like: frozen specs for models, hosts, the cloud and the whole fleet.

Owns the translation from the capability-matrix document to a fleet, so that `torchrouter up` and the
integration tests simulate exactly the hosts and models the router is configured for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# The simulated cloud's API key: valid against the simulated provider only, nowhere else.
SIM_CLOUD_KEY = "sim-cloud-key"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    size_gb: float
    tokens_per_s: float
    load_s: float
    context_window: int = 32768
    # A reasoning model thinks unless the request says think:false, as qwen3 does on Ollama; the thinking
    # costs tokens and time, which is what makes think:false worth checking for.
    reasoning: bool = False
    # Ollama's parallel slots for this model (a profile's num_parallel); None: the host's num_parallel.
    num_parallel: int | None = None


@dataclass(frozen=True)
class HostSpec:
    host_id: str
    port: int
    gpu_memory_gb: float
    num_parallel: int = 1
    max_loaded_models: int = 3
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)
    gpu_overhead_gb: float = 0.0  # OLLAMA_GPU_OVERHEAD: kept free on the GPU (Ollama's default 0)

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)

    def slots(self, model: ModelSpec) -> int:
        """Parallel slots of ``model`` on this host: its own num_parallel, else the host's."""
        return model.num_parallel or self.num_parallel


@dataclass(frozen=True)
class CloudSpec:
    port: int
    api_key: str = field(repr=False)  # kept out of reprs so it never lands in logs or test output
    models: tuple[str, ...] = ()
    tokens_per_s: float = 80.0


@dataclass(frozen=True)
class FleetSpec:
    hosts: tuple[HostSpec, ...]
    cloud: CloudSpec | None
    seed: int = 0
    time_scale: float = 1.0  # multiplies load and token time; keep_alive is wall-clock and not scaled
    host: str = "127.0.0.1"


def _port_of(api_base: str, where: str) -> int:
    port = urlsplit(api_base).port
    if port is None:
        raise ValueError(f"{where}: api_base {api_base!r} has no explicit port")
    return port


def fleet_spec_from_matrix(
    doc: Mapping[str, Any],
    *,
    cloud_api_key: str,
    seed: int = 0,
    time_scale: float = 1.0,
    host: str = "127.0.0.1",
) -> FleetSpec:
    """Build the fleet the capability matrix describes: one simulated Ollama per host, one cloud.

    Profiles with provider "ollama" become models on their host (size = vram_gb, speed derived from
    speed_score, load time the profile's load_time_s, else derived from vram_gb, parallel slots from the
    profile's num_parallel when it has one); profiles with provider "openai" become models of the one
    cloud, whose port comes from their shared api_base.
    """
    hosts_doc: Mapping[str, Any] = doc.get("hosts") or {}
    profiles: Mapping[str, Any] = doc.get("profiles") or {}
    models_by_host: dict[str, list[ModelSpec]] = {}
    cloud_models: list[str] = []
    cloud_ports: set[int] = set()
    for key, p in profiles.items():
        provider = p.get("provider")
        if provider == "ollama":
            vram = float(p["vram_gb"])
            models_by_host.setdefault(p["host_id"], []).append(
                ModelSpec(
                    name=str(p["model"]),
                    size_gb=vram,
                    tokens_per_s=20.0 + 130.0 * float(p.get("speed_score", 0.5)),
                    load_s=float(p["load_time_s"]) if p.get("load_time_s") is not None else 2.0 + 0.4 * vram,
                    context_window=int(p.get("context_window", 32768)),
                    reasoning=bool(p.get("reasoning", False) or p.get("requires_think_false", False)),
                    num_parallel=int(p["num_parallel"]) if p.get("num_parallel") is not None else None,
                )
            )
        elif provider == "openai":
            cloud_ports.add(_port_of(str(p["api_base"]), f"profile {key}"))
            if p["model"] not in cloud_models:
                cloud_models.append(str(p["model"]))
    if len(cloud_ports) > 1:
        raise ValueError(f"openai profiles must share one api_base port, found {sorted(cloud_ports)}")

    hosts: list[HostSpec] = []
    for host_id, models in models_by_host.items():
        h = hosts_doc.get(host_id)
        if h is None:
            raise ValueError(f"profiles name host {host_id!r}, which is not under hosts")
        hosts.append(
            HostSpec(
                host_id=host_id,
                port=_port_of(str(h["api_base"]), f"host {host_id}"),
                gpu_memory_gb=float(h["gpu_memory_gb"]),
                num_parallel=int(h.get("num_parallel", 1)),
                max_loaded_models=int(h.get("max_loaded_models", 3)),
                models=tuple(models),
                gpu_overhead_gb=float(h.get("gpu_overhead_gb", 0.0)),
            )
        )
    cloud = (
        CloudSpec(port=cloud_ports.pop(), api_key=cloud_api_key, models=tuple(cloud_models))
        if cloud_models
        else None
    )
    return FleetSpec(hosts=tuple(hosts), cloud=cloud, seed=seed, time_scale=time_scale, host=host)
