"""Ports for ``torchrouter up``: is a port free, pick free ones, and move the simulated fleet's ports.

The simulated fleet listens where the matrix and ``litellm_config.yaml`` say (``127.0.0.1:<port>`` in
hosts' and profiles' ``api_base``). To run a second fleet beside the first (``up --free-ports``, the
tests), copies of both files are written with every loopback port moved to a free one.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

_LOOPBACK_PORT = re.compile(r"127\.0\.0\.1:(\d{2,5})")


class PortInUse(Exception):
    """A port ``torchrouter up`` would bind is taken; the message names it and what it was for."""

    def __init__(self, port: int, role: str) -> None:
        super().__init__(
            f"port {port} ({role}) is already in use; stop what holds it, or choose other ports "
            "(--classifier-port, --litellm-port, or --free-ports for all of them)"
        )
        self.port = port
        self.role = role


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound now (a listener on the wildcard address counts as taken).
    SO_REUSEADDR as the servers use it, so a closed connection in TIME_WAIT is not "taken"."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check_ports(wanted: Iterable[tuple[int, str]]) -> None:
    """Raise :class:`PortInUse` for the first ``(port, role)`` that is taken; nothing is bound after."""
    for port, role in wanted:
        if not port_is_free(port):
            raise PortInUse(port, role)


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel says are free now (a later bind can still lose a race)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def loopback_ports(*texts: str) -> list[int]:
    """Every ``127.0.0.1:<port>`` port named in the texts, sorted, once each."""
    return sorted({int(p) for text in texts for p in _LOOPBACK_PORT.findall(text)})


def move_loopback_ports(text: str, port_map: Mapping[int, int]) -> str:
    return _LOOPBACK_PORT.sub(lambda m: f"127.0.0.1:{port_map.get(int(m.group(1)), int(m.group(1)))}", text)


def render_fleet_files(matrix: Path, config: Path, dst: Path) -> dict[int, int]:
    """Copy ``matrix`` and ``config`` into ``dst`` (as ``matrix.yaml`` and ``litellm_config.yaml``) with
    every loopback port moved to a free one; returns old port -> new port."""
    matrix_text, config_text = matrix.read_text(encoding="utf-8"), config.read_text(encoding="utf-8")
    shipped = loopback_ports(matrix_text, config_text)
    port_map = dict(zip(shipped, free_ports(len(shipped)), strict=True))
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "matrix.yaml").write_text(move_loopback_ports(matrix_text, port_map), encoding="utf-8")
    (dst / "litellm_config.yaml").write_text(move_loopback_ports(config_text, port_map), encoding="utf-8")
    return port_map
