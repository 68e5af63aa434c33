"""Which failures are retried, how long to wait before a retry, and what to say when the tries run out.

As openai-python does it: connection errors, timeouts, 408, 409, 429 and 5xx are
retried with exponential backoff and jitter (0.5 s doubling to at most 8 s), and a
``retry-after-ms`` or ``retry-after`` header of up to 60 s is honoured; 400, 401, 403,
404 and 422 never are, and a 500 only once unless its message says it is transient.
A server's ``x-should-retry: true|false`` overrides all of that.

>>> should_retry(503, {}, "busy", errors_500=0), should_retry(400, {}, "bad", errors_500=0)
(True, False)
>>> retry_after({"retry-after-ms": "250"})
0.25
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from typing import Mapping

from .transports import ConnectionLost, ReadTimeout, TransportError

__all__ = ["INITIAL_RETRY_DELAY", "MAX_RETRY_DELAY", "OVERLOAD", "backoff", "gave_up", "retry_after",
           "should_retry"]

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
NEVER_RETRY = {400, 401, 403, 404, 422}
TRANSIENT = re.compile(r"transient|temporar|overload|try again|unavailable|timed? ?out", re.I)
#: Answers that say the server has more than it can take: fewer requests in flight.
OVERLOAD = {429, 503, 504}


def backoff(retries: int) -> float:
    """Seconds to wait before retry number ``retries + 1``: doubling from 0.5 s to 8 s, less up to a quarter.

    >>> 0.375 <= backoff(0) <= 0.5 and 6.0 <= backoff(10) <= 8.0
    True
    """
    return min(INITIAL_RETRY_DELAY * 2.0**retries, MAX_RETRY_DELAY) * (1 - 0.25 * random.random())


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait, from retry-after-ms or retry-after (lower-case names); None if
    absent or unreasonable (not in (0, 60])."""
    value: float | None = None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = None
    if value is None and (ra := headers.get("retry-after")) is not None:
        try:
            value = float(ra)
        except ValueError:
            parsed = email.utils.parsedate_tz(ra)
            if parsed is not None:
                value = email.utils.mktime_tz(parsed) - time.time()
    if value is not None and 0 < value <= 60:
        return value
    return None


def should_retry(status: int, headers: Mapping[str, str], message: str, *, errors_500: int) -> bool:
    """Whether an error answer is worth another try; ``errors_500``: the 500s this request met before."""
    hint = headers.get("x-should-retry")
    if hint in ("true", "false"):
        return hint == "true"
    if status in NEVER_RETRY:
        return False
    if status == 500:
        return errors_500 == 0 or bool(TRANSIENT.search(message or ""))
    return status in (408, 409, 429) or status >= 500


def gave_up(e: TransportError, url: str, tries: int, timeout: float, paced: str = "") -> str:
    """What to say of a request whose every try ended without an answer, by how the last one ended.

    >>> gave_up(ConnectionLost("reset"), "http://h/v1/completions", 3, 60.0)
    'lost the connection to http://h/v1/completions on 3 tries: the server was reached but closed it ...'
    """
    times = f"{tries} tr{'y' if tries == 1 else 'ies'}"
    name = type(e).__name__
    detail = f"{name}: {e}" if str(e) else name
    if isinstance(e, ReadTimeout):
        return (f"timed out waiting for {url}: no answer within {timeout:g} s on {times} ({name}; the server was "
                f"reached but is slow or busy{paced}); pass a larger timeout= or a smaller max_in_flight=")
    if isinstance(e, ConnectionLost):
        return (f"lost the connection to {url} on {times}: the server was reached but closed it without an answer "
                f"({detail})")
    return f"could not reach {url} after {times}: {detail}"
