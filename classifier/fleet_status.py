"""Per-host memory and load, as the classifier knows it: ``GET /fleet`` and the ``classifier_host_*`` metrics.

Sources: the classifier's own ``/api/ps`` poll (capacity, used memory and where it came from, resident
models with their ``size_vram``) and the hooks' report on every response (``x-torchrouter-ledger``: GB
reserved, live leases, pending loads and requests in flight per host; :class:`LedgerMirror`). The
classifier reads the ledger from the report rather than from Redis so that one path serves both backends
and the classifier needs no Redis client: reservations only change while LiteLLM handles requests, and
every response the classifier relays carries the state after its own pick. The mirror also feeds lane
capacity (:func:`torchrouter_core.capacity.lane_limits`), so queue limits and placement read the same
fit rule (:mod:`torchrouter_core.usability`) and the same reservations.

Metric labels are host ids from the matrix only (bounded): a host the report names that the matrix does
not know is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from capability_matrix import FleetView
from capability_matrix.model import BYTES_PER_GB
from torchrouter_core.contract import HostReport
from torchrouter_core.ledger import HostLedger


@dataclass
class LedgerMirror:
    """The hooks' last ``x-torchrouter-ledger`` report (host id -> :class:`HostReport`) and when it came."""

    hosts: dict[str, HostReport] = field(default_factory=dict)
    received_at: float | None = None
    on_change: Callable[[], None] = lambda: None  # the reservations changed (the app refreshes lane limits)
    # Request id -> its own part of the reports (``x-torchrouter-own``), while its relay runs.
    live: dict[str, Mapping[str, HostReport]] = field(default_factory=dict)
    # The requests whose own parts ``hosts`` includes: those live when the last report came.
    included: set[str] = field(default_factory=set)
    awaiting: int = 0  # requests forwarded whose answer (and report) has not come yet
    # When a request ended before its answer came (a client that left, a budget, LiteLLM unreachable)
    # while ``hosts`` said something: the report may still count what that request held.
    unsettled_since: float | None = None

    def started(self) -> None:
        """A request was forwarded: its report comes with its answer."""
        self.awaiting += 1

    def answered(self) -> None:
        """The request's answer (and report) came."""
        self.awaiting = max(0, self.awaiting - 1)

    def lost(self, now: float) -> None:
        """The request ended before its answer came: the hooks give back what it held (a cancelled call's
        leases and in-flight entries) when they notice, which for a stream already answered by its provider
        is at its next chunk, seconds later for a slow model. Until then every report, this request's
        neighbours' included, may still count it; :meth:`expire` settles the view once nothing of this
        classifier's awaits an answer."""
        self.awaiting = max(0, self.awaiting - 1)
        if self.hosts or self.unsettled_since is not None:
            self.unsettled_since = now  # the latest loss: expire() waits from here

    def expire(self, now: float, after_s: float) -> bool:
        """``after_s`` seconds after a request was :meth:`lost`, once nothing else awaits its answer, the
        mirror keeps only what it knows still runs (the own parts of the requests being relayed): what the
        reports counted for the lost request would otherwise stay in the lanes' capacity and ``/fleet``
        until the next answer. Every request of this classifier is then either relayed (its part known) or
        over, so nothing it holds is dropped. ``True`` when the reservations (GB, pending loads) changed."""
        since = self.unsettled_since
        if since is None or self.awaiting > 0 or now - since < after_s:
            return False
        self.unsettled_since = None
        hosts: dict[str, HostReport] = {}
        for own in self.live.values():
            for host, mine in own.items():
                r = hosts.get(host, HostReport(0.0, 0, 0, 0))
                hosts[host] = HostReport(
                    r.reserved_gb + mine.reserved_gb,
                    r.leases + mine.leases,
                    r.pending_models + mine.pending_models,
                    r.in_flight + mine.in_flight,
                )
        self.included = set(self.live)
        return self._replace(hosts, self.received_at)

    def update(
        self,
        report: Mapping[str, HostReport],
        now: float,
        request_id: str | None = None,
        own: Mapping[str, HostReport] | None = None,
    ) -> bool:
        """Replace the mirror with a report (``request_id``'s, whose own part is ``own``); ``True`` (and
        ``on_change``) when the reservations changed."""
        if request_id is not None and own is not None:
            self.live[request_id] = own
        self.included = set(self.live)
        return self._replace(dict(report), now)

    def ended(self, request_id: str) -> bool:
        """The request's relay ended: its own part leaves the mirror, unless a later report was taken
        after it ended (then that report no longer had it)."""
        own = self.live.pop(request_id, None)
        if own is None or request_id not in self.included:
            return False
        self.included.discard(request_id)
        hosts = dict(self.hosts)
        for host, mine in own.items():
            r = hosts.get(host)
            if r is None:
                continue
            left = HostReport(
                max(0.0, r.reserved_gb - mine.reserved_gb) if r.leases > mine.leases else 0.0,
                max(0, r.leases - mine.leases),
                max(0, r.pending_models - mine.pending_models) if r.leases > mine.leases else 0,
                max(0, r.in_flight - mine.in_flight),
            )
            if left == HostReport(0.0, 0, 0, 0):
                del hosts[host]
            else:
                hosts[host] = left
        return self._replace(hosts, self.received_at)

    def _replace(self, hosts: dict[str, HostReport], now: float | None) -> bool:
        changed = {h: (r.reserved_gb, r.pending_models) for h, r in hosts.items()} != {
            h: (r.reserved_gb, r.pending_models) for h, r in self.hosts.items()
        }
        self.hosts, self.received_at = hosts, now
        if changed:
            self.on_change()
        return changed

    def reserved(self) -> dict[str, HostLedger]:
        """The mirror as the fit rule reads it (:func:`torchrouter_core.usability.host_rooms`)."""
        return {h: HostLedger(r.reserved_gb, (), r.pending_models) for h, r in self.hosts.items()}


def fleet_status(fleet: FleetView, mirror: LedgerMirror) -> dict[str, Any]:
    """The ``GET /fleet`` document: per matrix host, memory (GB), the ledger and resident models."""
    matrix, overlay = fleet.matrix(), fleet.overlay()
    hosts: dict[str, Any] = {}
    for host_id, host in matrix.hosts.items():
        memory = overlay.memory.get(host_id)
        report = mirror.hosts.get(host_id, HostReport(0.0, 0, 0, 0))
        obs = fleet.observations.get(host_id)
        resident = [
            {
                "model": m.name,
                "size_vram_gb": round(m.size_vram_bytes / BYTES_PER_GB, 3),
                "expires_at": m.expires_at,
            }
            for m in (obs.loaded if obs is not None and obs.reachable else ())
        ]
        hosts[host_id] = {
            "capacity_gb": round(memory.total_gb if memory else host.gpu_memory_gb, 3),
            # OLLAMA_GPU_OVERHEAD as the matrix declares it: kept free, so a load fits in capacity less this.
            "gpu_overhead_gb": host.gpu_overhead_gb,
            "used_gb": None if memory is None or memory.used_gb is None else round(memory.used_gb, 3),
            "memory_source": memory.source.value if memory else None,
            "reserved_gb": round(report.reserved_gb, 3),
            "reservations": report.leases,
            "pending_loads": report.pending_models,
            "requests_in_flight": report.in_flight,
            "reachable": bool(obs is not None and obs.reachable),
            "resident": resident,
            "num_parallel": host.num_parallel,
            "max_loaded_models": host.max_loaded_models,
        }
    return {"hosts": hosts, "ledger_reported_at": mirror.received_at, "now": time.time()}


class FleetCollector(Collector):
    """``classifier_host_*`` gauges, read at scrape time from :func:`fleet_status`."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        families = {
            "capacity_gb": GaugeMetricFamily(
                "classifier_host_vram_capacity_gb", "GPU memory of the host (GB)", labels=["host"]
            ),
            "used_gb": GaugeMetricFamily(
                "classifier_host_vram_used_gb", "GPU memory in use per the last poll (GB)", labels=["host"]
            ),
            "reserved_gb": GaugeMetricFamily(
                "classifier_host_vram_reserved_gb",
                "GPU memory the VRAM ledger holds for loads not yet listed by /api/ps (GB)",
                labels=["host"],
            ),
            "reservations": GaugeMetricFamily(
                "classifier_host_vram_reservations", "Live VRAM ledger leases on the host", labels=["host"]
            ),
            "requests_in_flight": GaugeMetricFamily(
                "classifier_host_requests_in_flight",
                "Requests the hooks have in flight on the host",
                labels=["host"],
            ),
            "resident": GaugeMetricFamily(
                "classifier_host_resident_models",
                "Models resident on the host per the last poll",
                labels=["host"],
            ),
        }
        for host_id, host in self._status()["hosts"].items():
            for name, family in families.items():
                value = host[name]
                if name == "resident":
                    value = len(value)
                if value is not None:
                    family.add_metric([host_id], float(value))
        yield from families.values()
