"""A black-box teacher behind an OpenAI-compatible server (vLLM, TGI, llama.cpp, OpenAI).

URI: `openai+http://host:port/v1?model=NAME[&api=chat|completions][&top_logprobs=20]` (or
`openai+https://`); servers that allow more than 20 top log-probabilities (vLLM's
--max-logprobs) give sharper scores.
Each text is one request for a single token with its top log-probabilities; an option's
score is the log-sum-exp of the returned tokens that spell its beginning. No hidden states
and no channel scoring: strategies fall back to what a black box offers.

Requests run on httpx's async client, PARALLEL_REQUESTS at a time, each under an overall
deadline (`asyncio.timeout`, REQUEST_DEADLINE_S): httpx's own timeouts bound each network
operation, not the request, so a server that trickles bytes would hold a call forever
(encode/httpx#1450, where cancelling the async request is the suggested bound). A request
past its deadline is cancelled, its connection closed, and it counts as a transport failure
for the retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np

from worker.distill.prompts import Prompt
from worker.distill.sources import ModelSourceError, check_uri
from worker.distill.teachers.base import TeacherError, TeacherScores

TOP_LOGPROBS = 20  # the most OpenAI-compatible servers return
MISSING_LOGPROB = -30.0  # an option absent from the top tokens is very unlikely, not impossible
REQUEST_TIMEOUT_S = 120  # per connect, write and read (httpx)
# A whole request: connect, send, the server's wait, the answer. An answer comes all at once
# (one token, no streaming), so a healthy request ends within the read timeout; beyond this
# the server is trickling or wedged.
REQUEST_DEADLINE_S = 150.0
PARALLEL_REQUESTS = 8
RETRIES = 3
TICK_S = 1.0  # the most often a pass reports progress between its batches (seconds)
RETRY_BACKOFF_S = 0.5  # doubled per retry
# A rate-limited server's Retry-After is honoured up to this (a hosted API asks for seconds
# to a minute); a longer wait counts as the server failing, as the retries run out.
RETRY_AFTER_MAX_S = 30.0


def retry_wait_s(resp: httpx.Response | None, attempt: int) -> float:
    """Seconds before try `attempt + 2` after try `attempt + 1` answered `resp` (None: it
    failed in transport): the doubling backoff, or longer when a 429/503 answer's
    Retry-After (in seconds) asks for it, up to RETRY_AFTER_MAX_S. Only those two statuses
    mean "come back later" (RFC 9110 10.2.3, RFC 6585); a 500's Retry-After is not obeyed."""
    backoff = RETRY_BACKOFF_S * 2 ** attempt
    if resp is None or resp.status_code not in (429, 503):
        return backoff
    try:
        asked = float(resp.headers.get("retry-after", ""))
    except ValueError:  # absent, or an HTTP date: the backoff
        return backoff
    return min(max(backoff, asked), RETRY_AFTER_MAX_S) if math.isfinite(asked) else backoff


def _run_to_end(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main()` on a fresh event loop. asyncio.run refuses to start inside a running
    loop (a notebook, an async caller of the engine), so there it runs on a helper thread
    while this one waits: the engine's calls stay synchronous everywhere.

    Raises what `main()` raises; an exception that reaches the waiting thread instead (a
    KeyboardInterrupt: Ctrl-C in a notebook) cancels `main()` first, so the interrupt ends
    the pass's requests rather than waiting for all of them, and no helper thread lives on."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: a Celery worker or a plain script
        asyncio.run(main())
        return
    started = threading.Event()
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []

    async def cancellable() -> None:
        task = asyncio.current_task()
        assert task is not None  # a coroutine run by asyncio.run always has its task
        running.append((asyncio.get_running_loop(), task))
        started.set()
        await main()

    with ThreadPoolExecutor(1, thread_name_prefix="openai-teacher") as pool:
        future = pool.submit(asyncio.run, cancellable())
        try:
            future.result()
        except BaseException:
            if not future.done():
                started.wait()
                loop, task = running[0]
                with contextlib.suppress(RuntimeError):  # it ended meanwhile: loop closed
                    loop.call_soon_threadsafe(task.cancel)
            raise  # once the pool has joined the helper (the `with` block's exit)


class OpenAITeacher:
    """Teacher that asks an OpenAI-compatible endpoint.

    Args:
        uri: see the module docstring; the API key comes from TAILOR_OPENAI_API_KEY.
    Attributes:
        deadline_s: the most seconds one request may take in all (REQUEST_DEADLINE_S).
    """

    hidden_size = 0
    total_params = 0
    precision = "float32"  # nothing to choose here: the server computes as it does

    def __init__(self, uri: str) -> None:
        try:
            check_uri(uri)  # refuses a URI carrying credentials: keys are the worker's setting
        except ModelSourceError as exc:
            raise TeacherError(exc.code, exc.message) from None
        parts = urlsplit(uri.removeprefix("openai+"))
        query = parse_qs(parts.query)  # model, api and top_logprobs were checked by check_uri
        self.model = query["model"][0]
        self.api = query.get("api", ["chat"])[0]
        self.top = int(query.get("top_logprobs", [TOP_LOGPROBS])[0])
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
        self.uri = uri
        # A key read from a secret file often ends in a newline, which no header may carry:
        # every request would fail in transport, blamed on the server.
        self._key = os.environ.get("TAILOR_OPENAI_API_KEY", "").strip()
        if self._key and not (self._key.isascii() and self._key.isprintable()):
            raise TeacherError("teacher_error", "TAILOR_OPENAI_API_KEY holds characters an "
                               "HTTP header cannot carry (the key is not shown)")
        self._headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._ssl = httpx.create_ssl_context()  # once: each pass opens a fresh async client
        self.deadline_s = REQUEST_DEADLINE_S

    def _scrub(self, text: str) -> str:
        """`text` without the API key: servers echo a wrong key in their 401 answers."""
        return text.replace(self._key, "[redacted]") if self._key else text

    @property
    def id(self) -> str:
        return f"openai:{self.base_url}#{self.model}"

    async def _ask(self, client: httpx.AsyncClient, prompt: Prompt, text: str
                   ) -> dict[str, float]:
        """Top next-token log-probabilities after the prompt, as {token: logprob}.

        Raises TeacherError `teacher_unreachable` when every try failed in transport or ran
        past `deadline_s`, `teacher_error` on an error answer, `teacher_no_logprobs`."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": 1, "temperature": 0}
        if self.api == "chat":
            body.update(messages=[{"role": "user", "content": prompt.render(text)}],
                        logprobs=True, top_logprobs=self.top)
            path = "/chat/completions"
        else:
            body.update(prompt=prompt.render(text) + "\nAnswer:", logprobs=self.top)
            path = "/completions"
        resp: httpx.Response | None = None
        for attempt in range(RETRIES):
            resp = None  # an earlier try's answer must not set this try's wait
            try:
                async with asyncio.timeout(self.deadline_s):
                    resp = await client.post(self.base_url + path, json=body)
                if resp.status_code < 500 and resp.status_code != 429:
                    break
            except (httpx.TransportError, TimeoutError) as exc:
                if attempt == RETRIES - 1:
                    why = (exc if isinstance(exc, httpx.TransportError) else
                           f"no whole answer within {self.deadline_s:g} s")
                    raise TeacherError("teacher_unreachable", self._scrub(
                        f"{self.base_url} did not answer: {why}")) from exc
            if attempt < RETRIES - 1:
                await asyncio.sleep(retry_wait_s(resp, attempt))
        if resp is None:  # not reached: the last try's transport failure was raised
            raise TeacherError("teacher_unreachable", f"{self.base_url} did not answer")
        if resp.status_code != 200:
            # Scrubbed before cutting, so no prefix of the key survives the cut.
            raise TeacherError("teacher_error", f"{self.base_url}{path} answered "
                               f"{resp.status_code}: {self._scrub(resp.text)[:200]}")
        # A proxy's page, a body cut short, tokens without numbers: the server's fault, named
        # as such (never an internal error, never a NaN score).
        try:
            choice = resp.json()["choices"][0]
            if self.api == "chat":
                pairs = [(t["token"], t["logprob"])
                         for t in choice["logprobs"]["content"][0]["top_logprobs"]]
            else:
                pairs = list(choice["logprobs"]["top_logprobs"][0].items())
            # A log-probability is at most 0: a larger one (a server's bug or a hostile
            # answer) would outweigh every real answer.
            return {str(token): min(float(lp), 0.0) for token, lp in pairs
                    if isinstance(lp, int | float) and math.isfinite(lp)}
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise TeacherError("teacher_no_logprobs",
                               f"{self.base_url} returned no readable log-probabilities; the "
                               "teacher server must support logprobs") from exc

    def _ask_all(self, prompts: Sequence[Prompt], texts: Sequence[str], batch_size: int,
                 options: int, on_batch: Callable[[int], None] | None) -> np.ndarray:
        """Scores [N, options] of text i under prompts[i], `batch_size` texts a batch
        (`on_batch(n)` after each, and `on_batch(0)` after an answered request at most every
        TICK_S: a batch of hundreds of texts on a slow server is progress, not a stall, and
        a cancel is seen within a request or TICK_S), PARALLEL_REQUESTS requests in
        flight; the first failure (or exception from `on_batch`) cancels the rest and is
        raised."""
        for prompt in prompts:
            if prompt.kind != "choice":
                raise TeacherError("unsupported_prompt",
                                   "an OpenAI-compatible teacher answers questions only")
        out = np.full((len(texts), options), MISSING_LOGPROB, dtype=np.float32)
        if not texts:
            return out

        async def run() -> None:
            gate = asyncio.Semaphore(PARALLEL_REQUESTS)
            limits = httpx.Limits(max_connections=PARALLEL_REQUESTS)
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, headers=self._headers,
                                         verify=self._ssl, limits=limits) as client:

                ticked = [time.monotonic()]

                async def one(i: int) -> None:
                    async with gate:
                        top = await self._ask(client, prompts[i], texts[i])
                    out[i] = option_scores(top, prompts[i].options)
                    # At most one mid-batch tick a TICK_S: each may cost a Redis round trip
                    # (a shard's stop key) or a progress write, and a fast server answers
                    # hundreds of requests a second.
                    if on_batch and time.monotonic() - ticked[0] >= TICK_S:
                        ticked[0] = time.monotonic()
                        on_batch(0)

                for start in range(0, len(texts), batch_size):
                    end = min(start + batch_size, len(texts))
                    async with asyncio.TaskGroup() as tasks:
                        for i in range(start, end):
                            tasks.create_task(one(i))
                    if on_batch:
                        on_batch(end - start)

        try:
            _run_to_end(run)
        except ExceptionGroup as group:  # a TaskGroup's failure: raise the first one
            raise group.exceptions[0] from None
        return out

    def score(self, prompt: Prompt, texts: Sequence[str], *, batch_size: int = 16,
              max_text_tokens: int = 256, prefix_cache: bool = True, want_hidden: bool = False,
              on_batch: Callable[[int], None] | None = None) -> TeacherScores:
        """Score `texts` under a question prompt; requests run PARALLEL_REQUESTS at a time."""
        # Keep roughly max_text_tokens (about 4 characters per token) of each text.
        clipped = [t[: max_text_tokens * 4] for t in texts]
        return TeacherScores(self._ask_all([prompt] * len(texts), clipped, batch_size,
                                           len(prompt.options), on_batch), None)

    def score_each(self, prompts: Sequence[Prompt], texts: Sequence[str], *,
                   batch_size: int = 8, max_text_tokens: int = 256,
                   on_batch: Callable[[int], None] | None = None) -> TeacherScores:
        """Scores [N, K] of text i under prompts[i]."""
        clipped = [t[: max_text_tokens * 4] for t in texts]
        k = len(prompts[0].options) if prompts else 0
        return TeacherScores(self._ask_all(prompts, clipped, batch_size, k, on_batch), None)

    def option_ids(self, options: Sequence[str]) -> list[list[int]]:
        """Black boxes have no vocabulary to check; options are matched by text instead."""
        return [[i] for i in range(len(options))]

    def latency_ms(self, prompt: Prompt, texts: Sequence[str], batch_size: int = 32) -> float:
        sample = list(texts[:batch_size])
        started = time.perf_counter()
        self.score(prompt, sample, batch_size=batch_size)
        return 1000 * (time.perf_counter() - started) / max(1, len(sample))


def option_scores(top: dict[str, float], options: Sequence[str]) -> np.ndarray:
    """Per option [K], log-sum-exp over returned tokens that begin it (case and space
    ignored); a token that could begin two options counts for neither; MISSING_LOGPROB for
    an option no token begins. The sum is taken from the largest term, so very small
    log-probabilities (vLLM's -9999.0 for an impossible token) stay finite."""
    owners: dict[str, list[int]] = {}
    for token in top:
        piece = token.strip().lower()
        if not piece:
            continue
        owners[token] = [k for k, word in enumerate(options) if word.lower().startswith(piece)]
    scores = []
    for k in range(len(options)):
        mine = [top[t] for t, who in owners.items() if who == [k]]
        if not mine:
            scores.append(MISSING_LOGPROB)
            continue
        peak = max(mine)  # exp(-9999.0) is 0.0 and log(0.0) no number: sum from the peak
        scores.append(peak + math.log(sum(math.exp(x - peak) for x in mine)))
    return np.asarray(scores, dtype=np.float32)
