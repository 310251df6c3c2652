#!/usr/bin/env bash
# Install Debian's headless-capable chromium for the report test (tests/integration/test_report.py),
# only when it is missing: a second run is a no-op. Needs root (or sudo) and apt.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# With its recommended packages: they bring the fonts a headless screenshot draws text with.
$SUDO apt-get install -y chromium
echo "installed: $(chromium --version 2>/dev/null)"
