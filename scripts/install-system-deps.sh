#!/usr/bin/env bash
# Debian packages the test suite uses for real checks of the deployment files:
#   docker-compose (v1 client; parses and validates the compose files without an engine)
#   prometheus     (promtool: checks prometheus.yml, the alert rules and every dashboard query)
#   redis-server   (the VRAM ledger's shared backend; the ledger tests start a real one on a free port)
# Installed only when missing. Without root (or sudo) it says so and installs nothing: then the compose and
# promtool checks skip, naming the package, but the ledger tests that need redis-server FAIL (never skip: a
# shared ledger left untested must not pass); CI runs as root and installs them.
set -euo pipefail
need=()
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
((${#need[@]})) || exit 0
if [[ $(id -u) -eq 0 ]]; then sudo=(); elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=(sudo -n);
else echo "install-system-deps: not root; skipping apt-get install ${need[*]}" >&2; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
