#!/usr/bin/env bash
# The NVML checks on a machine with an NVIDIA GPU: tests/test_nvml_gpu.py reads the GPU through the fleet
# probe's reader and compares it with nvidia-smi and with a real 8 GiB allocation (torch, when installed).
# Usage: scripts/gpu-check.sh
#   PYTHON=...   the interpreter (default: .venv/bin/python when present, else python3)
#   WHEELS=dir   install packages from wheels in dir first, without network (for a machine with no .venv)
# The project's pytest settings are left out (-c /dev/null): they name plugins such a machine may not have.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=$(command -v python3); fi
fi
if [ -n "${WHEELS:-}" ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi || echo "nvidia-smi: not available"
"$PYTHON" -m pytest -q -s -p no:cacheprovider --noconftest -c /dev/null --rootdir . -rs tests/test_nvml_gpu.py
