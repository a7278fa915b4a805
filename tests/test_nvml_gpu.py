"""NVML on a real GPU: the fleet probe's memory reading against the driver's own figures.

These run only where NVML finds a GPU and skip, saying why, everywhere else (the CI machine has none, so
nothing depends on them). `scripts/gpu-check.sh` runs them on a GPU machine; what they printed on one is in
BENCHMARKS.md ("The NVML probe on a real GPU").
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator

import aiohttp
import pytest

from capability_matrix import BYTES_PER_GB, DEFAULT_MATRIX_PATH, MemorySource, build_overlay, load_matrix
from capability_matrix.live import GpuReading, HostObservation
from capability_matrix.probe import FleetProbe, NvmlGpuReader

MIB = 1 << 20


@pytest.fixture
def reader() -> Iterator[NvmlGpuReader]:
    gpu = NvmlGpuReader()
    reading = gpu.read()
    if not reading.available:
        gpu.close()
        pytest.skip(f"no GPU here: {reading.reason}")
    yield gpu
    gpu.close()


def _used(reading: GpuReading) -> int:
    return sum(d.used_bytes for d in reading.devices)


def _nvidia_smi() -> list[tuple[str, int, int, int, int]]:
    """(name, total, reserved, used, free) per GPU in MiB, from the driver's own tool."""
    query = "name,memory.total,memory.reserved,memory.used,memory.free"
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    rows = [[part.strip() for part in line.split(",")] for line in out.strip().splitlines()]
    table = []
    for name, total, reserved, used, free in rows:
        table.append((name, int(total), int(reserved), int(used), int(free)))
    return table


def test_reading_matches_nvidia_smi(reader: NvmlGpuReader) -> None:
    """NVML's memory info (v1, what the reader asks) counts the driver's reserved memory as used; nvidia-smi
    shows it apart (memory.reserved). Counted as used is right for placement: no model can have it."""
    reading = reader.read()
    seen = [(d.index, d.name, d.total_bytes, d.used_bytes, d.free_bytes) for d in reading.devices]
    print(f"\nNVML: {seen}")
    for device in reading.devices:
        assert device.total_bytes > 0 and device.free_bytes > 0
        assert device.used_bytes + device.free_bytes <= device.total_bytes + MIB
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi is not installed here: the reading is checked only for consistency")
    smi = _nvidia_smi()
    print(f"nvidia-smi (MiB: total, reserved, used, free): {smi}")
    assert len(smi) == len(reading.devices)
    for device, (name, total_mib, reserved_mib, used_mib, free_mib) in zip(reading.devices, smi, strict=True):
        assert device.name == name
        assert device.total_bytes // MIB == total_mib
        # read a moment apart, and nvidia-smi rounds each figure to a MiB
        assert abs(device.used_bytes // MIB - (used_mib + reserved_mib)) <= 64
        assert abs(device.free_bytes // MIB - free_mib) <= 64


def test_reading_follows_an_allocation(reader: NvmlGpuReader) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch cannot use the GPU here")
    torch.zeros(1, device="cuda")  # the CUDA context's own memory is in `before`
    torch.cuda.synchronize()
    before = _used(reader.read())
    block = torch.empty(8 * BYTES_PER_GB, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    during = _used(reader.read())
    del block
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    after = _used(reader.read())
    print(
        f"\nused GiB: before {before / BYTES_PER_GB:.2f}, during {during / BYTES_PER_GB:.2f}, after "
        f"{after / BYTES_PER_GB:.2f}"
    )
    assert during - before >= 8 * BYTES_PER_GB - 64 * MIB
    assert abs(after - before) <= 256 * MIB


def test_probe_and_overlay_take_the_local_hosts_memory_from_nvml(reader: NvmlGpuReader) -> None:
    matrix = load_matrix(DEFAULT_MATRIX_PATH)
    local = next(iter(matrix.hosts))
    truth = reader.read()

    async def poll() -> dict[str, HostObservation]:
        async with aiohttp.ClientSession() as session:  # the shipped hosts are unreachable here: that is fine
            probe = FleetProbe(lambda: matrix, session, timeout_s=0.5, gpu_reader=reader, local_host_id=local)
            return dict(await probe.poll_once(time.time()))

    observations = asyncio.run(poll())
    overlay = build_overlay(matrix, observations, now=time.time())
    memory = overlay.memory[local]
    assert memory.source == MemorySource.NVML
    assert memory.total_gb == pytest.approx(sum(d.total_bytes for d in truth.devices) / BYTES_PER_GB)
    assert memory.used_gb is not None
    assert abs(memory.used_gb - _used(truth) / BYTES_PER_GB) < 0.5
    others = [overlay.memory[h].source for h in matrix.hosts if h != local]
    assert MemorySource.NVML not in others  # NVML speaks for this machine alone


def test_read_cost(reader: NvmlGpuReader) -> None:
    """Not a timing assertion: prints what one read costs, for BENCHMARKS.md."""
    samples = []
    for _ in range(200):
        started = time.perf_counter()
        reader.read()
        samples.append(time.perf_counter() - started)
    samples.sort()
    print(f"\nNVML read: median {samples[100] * 1e3:.3f} ms, p99 {samples[198] * 1e3:.3f} ms over 200 reads")
    assert samples[0] > 0
