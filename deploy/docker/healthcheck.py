#!/usr/bin/env python3
"""Docker HEALTHCHECK for the Corolla image: exit 0 when the server is ready.

GETs COROLLA_HEALTHCHECK_URL (default http://127.0.0.1:$PORT/v2/health/ready, where PORT
defaults to 8501 as the REST port does: 200 once the
configured models are AVAILABLE, 503 while loading or draining). Standard library only, no
proxies, short timeout, so it costs a few tens of milliseconds per probe.
"""

import os
import sys
import urllib.error
import urllib.request

URL = os.environ.get(
    "COROLLA_HEALTHCHECK_URL",
    f"http://127.0.0.1:{os.environ.get('PORT', '').strip() or 8501}/v2/health/ready",
)


def main() -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(URL, timeout=float(os.environ.get("COROLLA_HEALTHCHECK_TIMEOUT", "3"))):
            return 0
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"corolla-healthcheck: {URL}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
