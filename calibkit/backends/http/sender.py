"""One request with retries under the limiter, and a pack of prompts in one request.

Each try waits for a place under the :class:`~calibkit.backends.http.limiter.AdaptiveLimiter`
and goes to the next base URL in turn. A timeout, a 429, 503 or 504 halve the
requests in flight (logger ``calibkit.http``, level warning); a request of several
prompts that times out is not sent again whole (:class:`SplitRequest`). What is retried,
and how long a retry waits, is :mod:`~calibkit.backends.http.retries`'.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any, Callable, Mapping, Sequence

from ...api import APIError, CompletionRequest, CompletionResponse
from .limiter import AdaptiveLimiter, Slot
from .packing import pack_body, unpack
from .responses import MalformedResponseError, NotJSON, decode_json, excerpt, parse_completion
from .retries import OVERLOAD, backoff, gave_up, retry_after, should_retry
from .transports import ReadTimeout, Response, ResponseTooLarge, Transport, TransportError

__all__ = ["NotSent", "Sender", "SplitRequest"]

log = logging.getLogger("calibkit.http")


class NotSent(Exception):
    """A request left unsent because another one of the same call failed."""


class SplitRequest(Exception):
    """A request of several prompts timed out: send its prompts as two smaller requests."""


class Sender:
    """Sends requests over ``transport`` (set once the client's loop runs) to ``base_urls`` in turn.

    ``http_requests`` counts the packs answered and ``splits`` the requests of several
    prompts that timed out and went again as two halves.
    """

    def __init__(self, base_urls: Sequence[str], limiter: AdaptiveLimiter, *, timeout: float, max_retries: int):
        self.base_urls = list(base_urls)
        self.limiter = limiter
        self.timeout = timeout
        self.max_retries = max_retries
        self.transport: Transport | None = None
        self.http_requests = 0
        self.splits = 0
        self._next_replica = itertools.count()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["transport"] = None  # a copy opens its own connections
        del state["_next_replica"]  # itertools objects do not pickle on every Python
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._next_replica = itertools.count()

    async def call(self, method: str, path: str, body: Any, headers: Mapping[str, str],
                   failed: asyncio.Event | None = None, divisible: bool = False,
                   parse: Callable[[bytes], Any] = decode_json) -> Any:
        """One call with retries; ``parse`` of the body of its 2xx answer (by default the decoded JSON).

        Once ``failed`` is set (another request of the same call failed for good), a try
        not yet sent raises :class:`NotSent`. A ``divisible`` request that times out
        raises :class:`SplitRequest`. A 2xx body that ``parse`` finds is not JSON is retried
        as a dropped connection is.
        """
        assert self.transport is not None
        data = None if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                                                    allow_nan=False).encode()
        retries = errors_500 = 0
        while True:
            answered: Response | None = None
            async with self.limiter.slot() as slot:
                if failed is not None and failed.is_set():
                    raise NotSent
                url = self.base_urls[next(self._next_replica) % len(self.base_urls)] + path
                try:
                    r = await self.transport.request(method, url, headers, data, self.timeout)
                except ResponseTooLarge as e:  # the same answer again would be as large: not retried
                    raise APIError(str(e)) from e
                except TransportError as e:
                    if isinstance(e, ReadTimeout):
                        self._back_off(slot, f"no answer from {url} within {self.timeout:g} s")
                        if divisible:
                            raise SplitRequest from e
                    if retries >= self.max_retries:
                        raise APIError(gave_up(e, url, retries + 1, self.timeout, self._paced(e))) from e
                    delay = backoff(retries)
                else:
                    if r.status_code < 300:
                        slot.succeeded()  # the server answered: no sign of overload
                        answered = r
                    else:
                        err = self._error(r, headers)
                        wait = retry_after(r.headers)
                        if r.status_code in OVERLOAD:
                            after = f", retry after {wait:g} s" if wait is not None else ""
                            self._back_off(slot, f"{url} answered {r.status_code} ({err.message}{after})")
                        if retries >= self.max_retries or not should_retry(r.status_code, r.headers, err.message,
                                                                           errors_500=errors_500):
                            raise err
                        errors_500 += r.status_code == 500
                        delay = wait or backoff(retries)
            if answered is not None:
                # The place is given back before the body is parsed, and this waits one turn
                # of the loop, so that the request woken into it goes out first: when many
                # answers come at once, new requests do not wait for all of them to be parsed.
                await asyncio.sleep(0)
                try:
                    return parse(answered.content)
                except NotJSON as e:
                    if retries >= self.max_retries:
                        raise MalformedResponseError(
                            f"{url} answered {answered.status_code} with a body that is not valid JSON ({e}; "
                            f"{len(answered.content)} bytes, ending {excerpt(answered.content)}), on every one of "
                            f"{retries + 1} tries (retried {retries} time{'' if retries == 1 else 's'}): "
                            f"something between here and the server cuts answers short; pass a larger "
                            f"max_retries= if it is rare"
                        ) from e
                    log.warning("%s answered %d with a body that is not valid JSON (%s): retrying",
                                url, answered.status_code, e)
                    delay = backoff(retries)
            await asyncio.sleep(delay)  # holding no place: the others may go meanwhile
            retries += 1

    @staticmethod
    def _error(r: Response, headers: Mapping[str, str]) -> APIError:
        """The APIError of an error answer; a 401 says where the key comes from."""
        try:
            payload: Any = json.loads(r.content)
        except ValueError:
            payload = {"message": r.content.decode("utf-8", "replace") or r.reason_phrase}
        err = APIError.from_body(r.status_code, payload)
        if r.status_code != 401:
            return err
        keyed = any(k.lower() == "authorization" for k in headers)
        hint = ("check the API key: ACS_API_KEY or api_key=" if keyed else
                "this client has no API key (a pickled Client leaves its key out and takes ACS_API_KEY when "
                "unpickled): set ACS_API_KEY or pass api_key=")
        return APIError(f"{err.message} ({hint})", status_code=401, type=err.type, param=err.param, code=err.code,
                        body=payload)

    def _paced(self, e: TransportError) -> str:
        lim = self.limiter
        if isinstance(e, ReadTimeout) and lim.limit < lim.maximum:
            return f"; the client had cut its requests in flight from {lim.maximum} to {lim.limit}"
        return ""

    def _back_off(self, slot: Slot, why: str) -> None:
        before = self.limiter.limit
        if slot.overloaded():
            log.warning("%s: requests in flight cut from %d to %d", why, before, self.limiter.limit)

    async def send_pack(self, reqs: list[CompletionRequest], headers: Mapping[str, str],
                        failed: asyncio.Event) -> list[CompletionResponse]:
        """Single-prompt requests, alike but for the prompt, as one request; each one's answer."""
        resp: CompletionResponse = await self.call("POST", "/completions", pack_body(reqs), headers, failed,
                                                   divisible=len(reqs) > 1, parse=parse_completion)
        self.http_requests += 1
        return unpack(resp, reqs)
