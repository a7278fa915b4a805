"""The ground floor is pure once imported: no module of it loads aiohttp, LiteLLM, pynvml,
prometheus_client or redis, directly or through a package ``__init__`` or a sibling (DESIGN.md).

Each module is imported in a fresh interpreter whose meta-path finder raises on those five libraries, so a
module already imported by this test session cannot hide an edge import.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import capability_matrix
import torchrouter_core

BLOCKED = ("aiohttp", "litellm", "pynvml", "prometheus_client", "redis")
# The one I/O module of the matrix package: the fleet probe (aiohttp, NVML). Imported by name, never via
# the package __init__.
EDGE_MODULES = frozenset({"capability_matrix.probe"})

_GUARD = """
import importlib, sys
BLOCKED = {blocked!r}

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"ground-floor import of blocked library {{name!r}}")
        return None

sys.meta_path.insert(0, _Blocker())
importlib.import_module(sys.argv[1])
"""


def ground_floor_modules() -> list[str]:
    names = []
    for package in (torchrouter_core, capability_matrix):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            if info.name not in EDGE_MODULES:
                names.append(info.name)
    return sorted(names)


def test_the_module_list_is_real() -> None:
    modules = ground_floor_modules()
    # Guard against a walk that finds nothing (and so passes vacuously).
    assert {"torchrouter_core.ranker.filters", "torchrouter_core.contract", "capability_matrix.model"} <= set(
        modules
    )


@pytest.mark.parametrize("module", ground_floor_modules())
def test_ground_floor_module_imports_without_edge_libraries(module: str) -> None:
    root = Path(torchrouter_core.__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", _GUARD.format(blocked=BLOCKED), module],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]


def test_the_guard_catches_an_edge_import() -> None:
    # The guard itself can fail: the probe module imports aiohttp and must be refused.
    result = subprocess.run(
        [sys.executable, "-c", _GUARD.format(blocked=BLOCKED), "capability_matrix.probe"],
        cwd=Path(torchrouter_core.__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "blocked library 'aiohttp'" in result.stderr
