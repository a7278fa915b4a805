"""A simulated GPU fleet: Ollama hosts and an OpenAI-compatible cloud that LiteLLM can call unchanged.

It is the product's default backend (`torchrouter up` without GPUs) and the integration tests' fleet.
`spec` describes a fleet, `scheduler` is the pure memory/slot model of one host, `ollama_app` and
`cloud_app` are the HTTP faces, and `fleet` runs them on ports.
"""

from torchrouter.sim.fleet import SimFleet, SimFleetError, SimFleetThread, serve_forever
from torchrouter.sim.spec import CloudSpec, FleetSpec, HostSpec, ModelSpec, fleet_spec_from_matrix

__all__ = [
    "CloudSpec",
    "FleetSpec",
    "HostSpec",
    "ModelSpec",
    "SimFleet",
    "SimFleetError",
    "SimFleetThread",
    "fleet_spec_from_matrix",
    "serve_forever",
]
