#!/usr/bin/env bash
# Install Debian's prometheus (the server and promtool) for the rule tests
# (tests/integration/test_prometheus_rules.py), the live test (tests/e2e/test_prometheus_live.py)
# and `careledger demo --prometheus`, only when it is missing: a second run is a no-op.
# Needs root (or sudo) and apt. The package's own service is not left running: the tests and the
# demo start their own server on a free port, and nothing should hold 9090.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 tells invoke-rc.d not to start services while the package installs; it is
# removed again afterwards unless it was already there.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod +x "$POLICY"
  trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update
# Without recommended packages: they are the node exporter and its textfile collectors.
$SUDO apt-get install -y --no-install-recommends prometheus
# Where systemd runs, keep the service from starting at boot (and stop it, had it started).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
echo "installed: $(prometheus --version 2>&1 | head -n 1)"
