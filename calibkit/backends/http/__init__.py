"""The HTTP backend: any OpenAI-compatible /completions endpoint, the ACS API first.

The two questions of the seam become completions requests: top-k is
``max_tokens=1, logprobs=k``; a continuation's log-probabilities come from echoing
prompt + continuation (``echo=True, logprobs=0``) and reading the continuation's span.

Layers, bottom up, a module each:

- ``transports``: the :class:`~calibkit.backends.http.transports.Transport` protocol
  (one request, its whole answer, calibkit's own ``TransportError`` family) and httpx's
  transport; ``http11``: calibkit's own HTTP/1.1 connections, the default;
- ``loop``: the event loop on a background thread that the connections live on for
  the client's life, so that the synchronous API also works inside Jupyter's running loop;
- ``limiter``: :class:`AdaptiveLimiter`, how many requests may be in flight, halved on
  a timeout, 429, 503 or 504 and grown back one by one;
- ``retries``: which failures are retried, the backoff, ``Retry-After``, and the final
  error's words ("could not reach", "lost the connection to", "timed out waiting for");
- ``responses``: a body into a completions response (:class:`MalformedResponseError`
  where it breaks the protocol), and a response into the two questions' answers;
- ``packing``: prompts packed into requests and the answers routed back by index;
- ``sender``: one request with retries under the limiter; ``dispatch``: many packs in
  flight, split in two where one times out, answers handed back as they come;
- ``client``: :class:`Client`, the public surface.

Example
-------
>>> import calibkit as ck
>>> with ck.Client.from_env(model="llama-8b") as api:      # ACS_API_BASE, ACS_API_KEY  # doctest: +SKIP
...     api.top_k(["The capital of France is"], k=5)
>>> vllm = ck.Client(["http://gpu1:8000/v1", "http://gpu2:8000/v1"], model="meta-llama/Llama-3.1-8B",
...                  logprobs_cap=20)                                           # doctest: +SKIP
"""

from .client import Client
from .limiter import AdaptiveLimiter
from .responses import MalformedResponseError

__all__ = ["AdaptiveLimiter", "Client", "MalformedResponseError"]
