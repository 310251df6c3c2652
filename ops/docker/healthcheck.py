"""The container's HEALTHCHECK: is this process serving Prometheus ``/metrics``?

The slim base image has no curl, so the probe is Python. It reads the port the same way the
process does (``careledger.settings.Settings``), so the two can never disagree. Exit 0 means
healthy; any other exit (or an exception) means unhealthy. With ``CARELEDGER_METRICS_PORT=0``
there is nothing to probe and the container reports healthy.
"""

from __future__ import annotations

import sys
import urllib.request

from careledger.settings import Settings

TIMEOUT_SECONDS = 4


def probe(port: int) -> int:
    """0 when ``http://127.0.0.1:{port}/metrics`` answers 200, else 1."""
    if port == 0:
        return 0
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(probe(Settings().metrics_port))
