"""The fleet probe: the package's only network and driver I/O.

It owns asking the fleet what is true now: `GET {api_base}/api/ps` on every declared host, concurrently, and
(for the host this process runs on, when configured) NVML's per-GPU memory. It turns answers into
`live.HostObservation`s and never raises for a host's sake: a refused connection, a timeout, an HTTP error or
a body that is not Ollama's `/api/ps` all read as `reachable=False` with the reason in `error`. What the
answers mean (warm states, memory source) is decided by the pure functions in `live.py`.

NVML only describes the local machine, so `NvmlGpuReader` is consulted for `local_host_id` alone; on a machine
without the library or a driver it reports unavailable with the reason and the overlay falls back to `/api/ps`
usage against declared capacity.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
import orjson

from capability_matrix.live import GpuDevice, GpuReading, HostObservation, LoadedModel
from capability_matrix.model import Host, Matrix

log = logging.getLogger(__name__)


class GpuReader(Protocol):
    """Reads this machine's GPU memory. Blocking; the probe calls it in a worker thread."""

    def read(self) -> GpuReading: ...


class NvmlGpuReader:
    """`GpuReader` on nvidia-ml-py. A missing package, library or driver makes it report unavailable, with the
    reason, from then on; it never raises, and importing this module never touches NVML.

    `used_bytes` is NVML's memory info (v1), which counts the driver's reserved memory as used (`nvidia-smi`
    shows it apart as `memory.reserved`: 616 MiB on an H200 with driver 580): taken for placement, so
    `total - used` is what models can have. Checked on a real GPU by `tests/test_nvml_gpu.py`."""

    def __init__(self) -> None:
        self._initialised = False
        self._failure: str | None = None

    def read(self) -> GpuReading:
        if self._failure is not None:
            return GpuReading.unavailable(self._failure)
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a declared dependency
            self._failure = f"nvidia-ml-py is not installed ({exc})"
            return GpuReading.unavailable(self._failure)
        if not self._initialised:
            try:
                pynvml.nvmlInit()
            except (pynvml.NVMLError, OSError) as exc:  # no libnvidia-ml, no driver: it will not appear later
                self._failure = f"NVML unavailable: {exc}"
                return GpuReading.unavailable(self._failure)
            self._initialised = True
        try:
            devices = []
            for index in range(int(pynvml.nvmlDeviceGetCount())):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                devices.append(
                    GpuDevice(
                        index=index,
                        name=name.decode() if isinstance(name, bytes) else str(name),
                        total_bytes=int(mem.total),
                        used_bytes=int(mem.used),
                        free_bytes=int(mem.free),
                    )
                )
        except pynvml.NVMLError as exc:  # e.g. a GPU fell off the bus: unavailable this time, retried next
            return GpuReading.unavailable(f"NVML read failed: {exc}")
        if not devices:
            return GpuReading.unavailable("NVML reports no GPU")
        return GpuReading(available=True, devices=tuple(devices))

    def close(self) -> None:
        if self._initialised:
            import pynvml

            self._initialised = False
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as exc:
                log.warning("NVML shutdown failed: %s", exc)


class Probe(Protocol):
    """What a process needs of a fleet probe (FleetProbe; tests pass their own to create_app)."""

    async def poll_once(self, now: float) -> dict[str, HostObservation]: ...

    async def run(
        self, interval_s: float, on_update: Callable[[dict[str, HostObservation]], None]
    ) -> None: ...


class FleetProbe:
    """Polls every host the current matrix declares; `matrix_source` is called per poll, so reloads apply."""

    def __init__(
        self,
        matrix_source: Callable[[], Matrix],
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 2.0,
        gpu_reader: GpuReader | None = None,
        local_host_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._matrix_source = matrix_source
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._gpu_reader = gpu_reader
        self._local_host_id = local_host_id
        self._clock = clock
        self._was_reachable: dict[str, bool] = {}
        self.latest: dict[str, HostObservation] = {}

    async def poll_once(self, now: float) -> dict[str, HostObservation]:
        """One observation per declared host, all polled at once; never raises for a host's failure."""
        matrix = self._matrix_source()
        hosts = list(matrix.hosts.values())
        gpu: GpuReading | None = None
        polls = asyncio.gather(*(self._poll_host(host, now) for host in hosts))
        if self._gpu_reader is not None and self._local_host_id in matrix.hosts:
            observed, gpu = await asyncio.gather(polls, asyncio.to_thread(self._gpu_reader.read))
        else:
            observed = await polls
        result: dict[str, HostObservation] = {}
        for obs in observed:
            if gpu is not None and obs.host_id == self._local_host_id:
                obs = dataclasses.replace(obs, gpu=gpu)
            result[obs.host_id] = obs
            self._log_transition(obs)
        self.latest = result
        return result

    async def run(self, interval_s: float, on_update: Callable[[dict[str, HostObservation]], None]) -> None:
        """Poll every `interval_s` until cancelled, handing each round to `on_update`."""
        while True:
            started = self._clock()
            observations = await self.poll_once(started)
            try:
                on_update(observations)
            except Exception:
                log.exception("fleet probe on_update callback failed")
            await asyncio.sleep(max(0.0, interval_s - (self._clock() - started)))

    async def _poll_host(self, host: Host, now: float) -> HostObservation:
        url = f"{host.api_base.rstrip('/')}/api/ps"
        try:
            async with self._session.get(url, timeout=self._timeout) as resp:
                if resp.status != 200:
                    return HostObservation(host.host_id, False, (), now, f"HTTP {resp.status} from {url}")
                body = await resp.read()
        except TimeoutError:
            return HostObservation(host.host_id, False, (), now, f"no answer from {url} within the timeout")
        except aiohttp.ClientError as exc:
            return HostObservation(host.host_id, False, (), now, f"{type(exc).__name__}: {exc}")
        try:
            loaded = parse_ollama_ps(body)
        except ValueError as exc:
            return HostObservation(host.host_id, False, (), now, f"not an /api/ps answer from {url}: {exc}")
        return HostObservation(host.host_id, True, loaded, now)

    def _log_transition(self, obs: HostObservation) -> None:
        was = self._was_reachable.get(obs.host_id)
        self._was_reachable[obs.host_id] = obs.reachable
        if was is not False and not obs.reachable:
            log.warning("fleet host %s unreachable: %s", obs.host_id, obs.error)
        elif was is False and obs.reachable:
            log.info("fleet host %s reachable again", obs.host_id)


def parse_ollama_ps(body: bytes) -> tuple[LoadedModel, ...]:
    """Ollama's `/api/ps` body -> loaded models. ValueError when it is not that shape."""
    doc = orjson.loads(body)
    if not isinstance(doc, dict) or "models" not in doc:
        raise ValueError("expected a JSON object with 'models'")
    models = doc["models"] or []  # some versions send null for none
    if not isinstance(models, list):
        raise ValueError("'models' is not a list")
    loaded = []
    for m in models:
        if not isinstance(m, dict):
            raise ValueError("a 'models' entry is not an object")
        name = m.get("name") or m.get("model")
        size_vram = m.get("size_vram", 0)
        if not isinstance(name, str):
            raise ValueError("a 'models' entry has no name")
        if not isinstance(size_vram, int) or isinstance(size_vram, bool) or size_vram < 0:
            raise ValueError(f"{name}: size_vram {size_vram!r} is not a byte count")
        loaded.append(LoadedModel(name, size_vram, _unix_time(m.get("expires_at"))))
    return tuple(loaded)


def _unix_time(value: object) -> float | None:
    """RFC 3339 (Go's, up to nanoseconds) -> Unix seconds; None for absent, unparsable or Go's zero time."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.year <= 1:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
