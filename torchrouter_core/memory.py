"""How much GPU memory a model claims on a host, and the headroom a host keeps: one rule for every reader.

The ranker's ``room`` filter, lane capacity (:mod:`torchrouter_core.capacity`), the VRAM ledger's
reservations (:func:`torchrouter_core.ledger.memory_claim`) and the eviction planner all size a load with
:func:`claim_gb`, so queue capacity, placement and reservations never disagree about a model's size.

Sources (Ollama's scheduler and memory estimate; ``ollama/ollama`` ``server/sched.go``,
``llm/memory.go``, ``discover/gpu.go``):

- **Observed first.** Once a host has listed a model in ``/api/ps``, its ``size_vram`` is the claim (the
  last one seen, kept after the model unloads: its next load on that host). Ollama's ``size_vram`` is its
  own estimate (``EstimateGPULayers``' ``VRAMSize``: weights, KV cache for ``num_ctx * num_parallel``,
  the compute graph and the GPU's minimum memory), which declared model sizes miss by several times.
- **Declared until then.** Before any observation the claim is the matrix's ``vram_gb`` (the weights, as
  ``ollama list`` shows them) plus :data:`OLLAMA_MIN_MEMORY_GB`: Ollama adds the library's minimum memory
  to every runner's allocation (``gpuAllocations[i] += gpus[i].MinimumMemory + layerSize``;
  ``cudaMinimumMemory = rocmMinimumMemory = 457 MiB``).
- **Headroom.** A model fits when its claim is at most the host's free memory less ``gpu_overhead_gb``
  (Ollama's ``OLLAMA_GPU_OVERHEAD``, 0 unless the operator sets it; ``EstimateGPULayers`` keeps it free
  on every GPU: ``FreeMemory > overhead + used + layerSize``). Free memory is Ollama's: the smaller of what
  the driver reports and total minus the loaded models' sizes (``updateFreeSpace``), which
  :func:`capability_matrix.live.derive_host_memory` applies.

Pure: values in, values out. Units: GB meaning GiB (``capability_matrix.model.BYTES_PER_GB``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from capability_matrix.model import Profile

# 457 MiB (Ollama's cudaMinimumMemory / rocmMinimumMemory) in GiB: part of every runner's size_vram.
OLLAMA_MIN_MEMORY_GB: Final = 457 / 1024


def claim_gb(profile: Profile, observed_gb: Mapping[tuple[str, str], float]) -> float:
    """GB loading ``profile``'s model on its host takes: the ``size_vram`` last seen for ``(host_id,
    model)`` in ``/api/ps`` (``observed_gb``), else the declared ``vram_gb`` plus Ollama's minimum memory.
    Whatever the warm state: callers decide whether a load is needed at all."""
    seen = observed_gb.get((profile.host_id, profile.model))
    return seen if seen is not None else profile.vram_gb + OLLAMA_MIN_MEMORY_GB
