"""What the runtime's real-Envoy tests share."""

from __future__ import annotations

import urllib.error
import urllib.request


def status_of(url: str, timeout: float = 10) -> int:
    """The status of a GET of ``url``, also for an error status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
