"""Classification: check the request, resolve the model reference, tokenize its texts, queue
them, shape results.

Every text is validated and tokenized with its own request, before it joins a micro-batch:
a text that is not valid Unicode, holds NUL, or has nothing a model can
read is a 422 naming it (`texts[3]`) and never reaches the batch other requests share.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from anyio import to_thread

from app.core.config import get_settings
from app.core.errors import Conflict, Invalid, PayloadTooLarge, Unavailable
from app.core.texts import InvalidText, validate_text
from app.ops.metrics import CLASSIFIED
from app.registry.service import MODEL_REF
from app.serving.batcher import MicroBatcher
from app.serving.explain import Explainer
from app.serving.pool import Encoded, ModelPool, Served
from app.serving.refs import RefCache, Target
from app.serving.schemas import ClassifyIn, PredictIn

DEFAULT_MULTI_THRESHOLD = 0.5
# Requests with up to this many characters are tokenized on the event loop: about 0.1 us a
# character (all-MiniLM-L6-v2's tokenizer, measured), so well under a millisecond, less
# than a hop to a worker thread costs. Larger ones tokenize in a thread.
INLINE_TOKENIZE_CHARS = 4096


ItemName = Callable[[int], str]  # a text's position -> how errors name it


def texts_item(i: int) -> str:
    """How /classify names its texts in errors: `texts[3]`."""
    return f"texts[{i}]"


def check_request(body: ClassifyIn, field: str = "texts", item: ItemName = texts_item
                  ) -> None:
    """Refuse requests over the limits or with an invalid text, naming the item.

    `field` names the list and `item(i)` its i-th text in errors (`texts`, `texts[3]` for
    /classify; other routes name their own fields).

    Raises:
        PayloadTooLarge: more than `max_classify_texts` texts (the limit in
            `details.max_texts`, so clients can split their lists).
        Invalid: `too_many_to_explain`, more than `max_explain_texts` texts with explain
            (the limit in `details.max_texts`).
        Invalid: a text over `max_text_chars` characters.
        InvalidText: an empty or invisible text, a lone surrogate, NUL, a text over the limit.
    """
    settings = get_settings()
    if len(body.texts) > settings.max_classify_texts:
        raise PayloadTooLarge(f"{field}: {len(body.texts)} texts exceed the limit of "
                              f"{settings.max_classify_texts} per request",
                              details={"field": field,
                                       "max_texts": settings.max_classify_texts})
    if body.explain and len(body.texts) > settings.max_explain_texts:
        refused = Invalid("texts", f"{len(body.texts)} texts with explain: true exceed the "
                          f"limit of {settings.max_explain_texts}; send fewer, or explain: "
                          "false", code="too_many_to_explain")
        refused.details = {"field": "texts", "max_texts": settings.max_explain_texts}
        raise refused
    for i, text in enumerate(body.texts):
        if len(text) > settings.max_text_chars:  # first: bounds the work of the next check
            raise Invalid(item(i), f"{len(text)} characters exceed the limit of "
                          f"{settings.max_text_chars}")
        validate_text(text, item(i))


def encode_request(pool: ModelPool, served: Served, texts: list[str],
                   item: ItemName = texts_item) -> Encoded:
    """Tokenize one request's texts for `served` (pinned), on their own.

    Raises:
        InvalidText: a text the tokenizer refuses, or one it reduces to no tokens at all
            (e.g. only U+FFFD or combining marks): the model would read nothing in it.
    """
    try:
        encoded = pool.encode(served, texts)
    except Exception:
        for i, text in enumerate(texts):  # which text? (validate_text should have caught it)
            try:
                pool.encode(served, [text])
            except Exception as exc:
                raise InvalidText(item(i), f"the model's tokenizer cannot read this "
                                  f"text ({type(exc).__name__})", reason="untokenizable"
                                  ) from exc
        raise  # fails only together: a bug, not the input
    for i, empty in enumerate(encoded.empty):
        if empty:
            raise InvalidText(item(i), "text must not be empty (the model's tokenizer "
                              "finds no tokens in it)", reason="empty")
    return encoded


# Loads in flight per pool: version key -> the one task loading it (see _loaded).
_LOADS: weakref.WeakKeyDictionary[ModelPool, dict[str, asyncio.Future[None]]] = \
    weakref.WeakKeyDictionary()


async def _loaded(pool: ModelPool, refs: RefCache, ref: str) -> tuple[Target, Served]:
    """The version `ref` names, pinned, loading it if needed.

    The requests that find a version unloaded share one load: a load takes seconds (an ONNX
    compile 15-25 s), and each waiting in a thread of its own held one of the threads every
    sync route and dependency borrows (AnyIO lends 40), so a burst of first requests for one
    new version stalled the whole API until the load ended.
    """
    cached = refs.get(ref)
    target = cached if cached is not None else await to_thread.run_sync(refs.resolve, ref)
    flights = _LOADS.setdefault(pool, {})
    while (served := pool.pin(target.key)) is None:
        flight = flights.get(target.key)
        if flight is None:
            flight = asyncio.ensure_future(to_thread.run_sync(
                pool.warm, target.key, target.artifact_path, target.files))
            flights[target.key] = flight
            flight.add_done_callback(partial(_landed, flights, target.key))
        await asyncio.shield(flight)  # the load's error (503) is every waiter's answer
    return target, served


def _landed(flights: dict[str, asyncio.Future[None]], key: str,
            flight: asyncio.Future[None]) -> None:
    flights.pop(key, None)
    if not flight.cancelled():
        flight.exception()  # retrieved here too, in case every waiter went away


async def classify(pool: ModelPool, batcher: MicroBatcher, refs: RefCache,
                   body: ClassifyIn, explainer: Explainer | None = None) -> dict[str, Any]:
    """Classify `body.texts` with the referenced model version, micro-batched.

    The usual request (reference recently resolved, version loaded, a few short texts)
    never leaves the event loop before its texts are queued; the database, model loading
    and the tokenizing of large requests run in a thread.

    With `body.explain`, each result also carries `"explanation"` (app.serving.explain),
    computed after the request's batched result, outside the micro-batch.

    Returns:
        `{"model": name, "version": int, "results": [{"label", "scores", "truncated"}]}`,
        one result per text, in order.

    Raises:
        Overloaded: 429 when the serving queue, or the explanation queue, is full.
        Unavailable: `explanation_failed` when an explanation raises (this request only).
    """
    check_request(body)
    if not body.explain:
        return (await _classify(pool, batcher, refs, body, keep=False))[0]
    if explainer is None:
        raise Unavailable("explanations are not available in this process",
                          code="explain_unavailable")
    explainer.admit()  # before the batcher: a refused request holds nothing
    try:
        out, served, probs = await _classify(pool, batcher, refs, body, keep=True,
                                             accept=_explainable)
        try:
            explanations = await explainer.explain(served, list(body.texts), probs)
        finally:
            pool.release(served)
    finally:
        explainer.cancel()
    for result, explanation in zip(out["results"], explanations, strict=True):
        result["explanation"] = explanation
    return out


def _explainable(served: Served) -> None:
    if served.head is None:
        raise Conflict(f"{served.key} is served through its compiled ONNX graph "
                       f"({served.precision}); explanations need the torch backend "
                       "(TAILOR_SERVING_BACKEND=torch)", code="explain_unavailable")


async def _classify(pool: ModelPool, batcher: MicroBatcher, refs: RefCache, body: ClassifyIn,
                    *, keep: bool, item: ItemName = texts_item,
                    accept: Callable[[Served], None] | None = None
                    ) -> tuple[dict[str, Any], Served, list[np.ndarray]]:
    """The response, the version and each text's probabilities. With `keep`, the version
    stays pinned for the caller (who must `pool.release` it) after the batch let it go.
    `accept(served)` may refuse the request once the version is known, before tokenizing."""
    n = len(body.texts)
    batcher.admit(n)  # refuse before any database or model work
    served: Served | None = None
    held = False
    try:
        target = refs.get(body.model)
        served = pool.pin(target.key) if target is not None else None
        if target is None or served is None:
            # Unpacked in two steps: as one, the Optional targets widen the inferred result
            # and the type checker loses that both are set.
            loaded = await _loaded(pool, refs, body.model)
            target, served = loaded
        if accept is not None:
            accept(served)
        texts = list(body.texts)
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            encoded = encode_request(pool, served, texts, item)
        else:
            encoded = await to_thread.run_sync(encode_request, pool, served, texts, item)
        if keep:
            pool.hold(served)  # a second pin: the batcher releases its own when answered
            held = True
        future = batcher.submit(served, encoded.ids, encoded.truncated)
    except BaseException:
        batcher.cancel(n)
        if served is not None:
            pool.release(served)
            if held:
                pool.release(served)
        raise
    try:
        results = await asyncio.wrap_future(future)
    except BaseException:
        if keep:
            pool.release(served)
        raise
    CLASSIFIED.labels(target.name).inc(n)
    shaped = [_result(p, served.labels, served.multi_label, body.threshold, body.top_k, cut)
              for p, cut in results]
    return ({"model": target.name, "version": target.version, "results": shaped}, served,
            [p for p, _ in results])


async def predict(pool: ModelPool, batcher: MicroBatcher, refs: RefCache, ref: str,
                  body: PredictIn) -> list[list[dict[str, Any]]]:
    """Classify in the Hugging Face text-classification inference contract (the answer of
    Inference Endpoints / the HF Inference API, which `huggingface_hub`'s
    `InferenceClient.text_classification` parses), through /classify's own checks, pool and
    micro-batcher.

    Args:
        ref: `name`, `name:3` or `name@alias`, from the URL path.
        body: `{"inputs": str | [str], "parameters": {"top_k"?, "function_to_apply"?}}`.

    Returns:
        One list per input, in order, also for a single string (`[[...]]`, as the HF API
        answers): `{"label", "score"}` for every label (the top `top_k`), highest score
        first; scores are the version's calibrated probabilities, as /classify's.

    Raises:
        Invalid: `ref` is not a model reference; `inputs` is an empty list;
            `function_to_apply` names another function than the version's calibrated one
            (`softmax` single-label, `sigmoid` multi-label): raw logits are not served.
        InvalidText, PayloadTooLarge, Overloaded: as /classify, naming `inputs` or
            `inputs[i]`.
    """
    if not MODEL_REF.match(ref):
        raise Invalid("ref", f"{ref[:140]!r} is not a model reference (name, name:3 or "
                      "name@alias)")
    single = body.single
    texts = list(body.inputs)
    if not texts:
        raise Invalid("inputs", "send at least one text")
    params = body.parameters
    top_k = params.top_k if params is not None else None
    function = params.function_to_apply if params is not None else None

    def item(i: int) -> str:
        return "inputs" if single else f"inputs[{i}]"

    def accept(served: Served) -> None:
        own = "sigmoid" if served.multi_label else "softmax"
        if function is not None and function != own:
            raise Invalid("parameters.function_to_apply", f"{served.key} serves calibrated "
                          f"{own} probabilities only; send {own!r} or leave it out",
                          code="unsupported_parameter")

    request = ClassifyIn.model_construct(model=ref, texts=texts, threshold=None, top_k=None,
                                         explain=False)
    check_request(request, "inputs", item)
    _, served, probs = await _classify(pool, batcher, refs, request, keep=False, item=item,
                                       accept=accept)
    return [[{"label": served.labels[i], "score": round(float(p[i]), 6)}
             for i in np.argsort(-p, kind="stable")[: top_k or len(served.labels)]]
            for p in probs]


def _result(probs: np.ndarray, labels: list[str], multi: bool, threshold: float | None,
            top_k: int | None, truncated: bool) -> dict[str, Any]:
    # top_k bounds the labels as well as the scores: `label` never names a label that
    # `scores` leaves out. A single-label top label is always within the top k (k >= 1).
    order = np.argsort(-probs)[: top_k or len(labels)]
    scores = {labels[i]: round(float(probs[i]), 6) for i in order}
    if multi:
        cut = DEFAULT_MULTI_THRESHOLD if threshold is None else threshold
        label: str | list[str] | None = [labels[i] for i in order if probs[i] >= cut]
    else:
        top = int(order[0])
        label = labels[top] if threshold is None or probs[top] >= threshold else None
    return {"label": label, "scores": scores, "truncated": truncated}
