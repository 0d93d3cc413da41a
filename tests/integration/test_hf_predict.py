"""The Hugging Face text-classification contract (`POST /models/{ref}/predict`) on a real API
process (embedded: SQLite, no worker needed), driven by the real `huggingface_hub`
InferenceClient: its answers are /classify's scores, bad input is a 4xx naming the item."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from tests.fixtures.tiny import CALM_TEXTS, CRISIS_TEXTS
from tests.fixtures.versions import register_tiny
from tests.integration.report import record_input
from tests.support import Stack, embedded_home, make_env

pytestmark = [pytest.mark.integration]

KEY, READER = "train-key", "reader-key"
HAZARDS = ("flood", "fire", "storm")
TEXTS = [CRISIS_TEXTS[0], CALM_TEXTS[0], CRISIS_TEXTS[1]]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[str, str]
        ) -> Iterator[Stack]:
    """One API process with `crisis` v1 (aliased `production`), an archived v2, and a
    multi-label `hazards` v1; a train key and a classify-only key."""
    tmp = tmp_path_factory.mktemp("hf-predict")
    with pytest.MonkeyPatch.context() as mp, embedded_home(tmp, mp) as home:
        register_tiny(tiny_models[1], seed=1)
        register_tiny(tiny_models[1], seed=2)
        register_tiny(tiny_models[1], name="hazards", labels=HAZARDS, multi_label=True, seed=3)
        stack = Stack(home, make_env(home, TAILOR_API_KEYS=f"{KEY}:train,{READER}:classify,"
                                     "admin-key", TAILOR_SERVING_MAX_QUEUE_DELAY_MS="60000"))
        stack.start_api()
        with stack.client(headers=auth("admin-key")) as admin:
            assert admin.put("/models/crisis/aliases/production",
                             json={"version": 1, "force": True}).status_code == 200
            assert admin.post("/models/crisis/versions/2/archive").status_code == 200
        try:
            yield stack
        finally:
            stack.discard()


def classify(api: Stack, model: str, texts: list[str]) -> list[dict[str, Any]]:
    with api.client(headers=auth(KEY)) as client:
        resp = client.post("/classify", json={"model": model, "texts": texts})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["results"])


def hf(api: Stack, ref: str, key: str = READER) -> InferenceClient:
    return InferenceClient(model=f"{api.url}/models/{ref}/predict", api_key=key, timeout=60)


def test_inference_client_gets_classify_scores_highest_first(api: Stack) -> None:
    expected = classify(api, "crisis@production", TEXTS)
    for text, result in zip(TEXTS, expected, strict=True):
        got = hf(api, "crisis@production").text_classification(text)
        assert [e.label for e in got] == sorted(result["scores"], key=result["scores"].get,
                                                reverse=True)
        assert {e.label: e.score for e in got} == result["scores"]
        assert got[0].label == result["label"]
        top = hf(api, "crisis:1").text_classification(text, top_k=1,
                                                      function_to_apply="softmax")
        assert [(e.label, e.score) for e in top] == [(got[0].label, got[0].score)]
    multi = classify(api, "hazards", TEXTS[:1])[0]["scores"]
    got = hf(api, "hazards").text_classification(TEXTS[0], function_to_apply="sigmoid")
    assert {e.label: e.score for e in got} == multi and len(got) == len(HAZARDS)
    assert sum(e.score for e in got) != pytest.approx(1.0, abs=1e-3)  # sigmoid, not softmax


def test_inference_client_sees_refusals_as_http_errors(api: Stack) -> None:
    cases = [("crisis", "wrong-key", {}, 401, "unauthorized"),
             ("crisis:2", READER, {}, 409, "version_archived"),
             ("nothing", READER, {}, 404, "model_not_found"),
             ("crisis", READER, {"function_to_apply": "none"}, 422, "unsupported_parameter"),
             ("hazards", READER, {"function_to_apply": "softmax"}, 422,
              "unsupported_parameter")]
    for ref, key, params, status, code in cases:
        with pytest.raises(HfHubHTTPError) as err:
            hf(api, ref, key).text_classification(TEXTS[0], **params)
        assert err.value.response is not None
        assert err.value.response.status_code == status, (ref, params)
        assert err.value.response.json()["error"]["code"] == code


def test_a_list_of_inputs_and_bad_input_naming_the_item(api: Stack) -> None:
    expected = classify(api, "crisis", TEXTS)
    with api.client(headers=auth(READER)) as client:
        resp = client.post("/models/crisis/predict", json={"inputs": TEXTS,
                                                           "parameters": {"top_k": 5}})
        assert resp.status_code == 200, resp.text
        assert [{e["label"]: e["score"] for e in row} for row in resp.json()] == \
            [r["scores"] for r in expected]
        bad: list[tuple[Any, int, str, str]] = [
            ({"inputs": ["flood", " \u200b "]}, 422, "invalid_text", "inputs[1]"),
            ({"inputs": "\u0000"}, 422, "invalid_text", "inputs"),
            ({"inputs": []}, 422, "invalid", "inputs"),
            ({"inputs": 3}, 422, "validation_error", "inputs"),
            ({"inputs": ["flood", 3]}, 422, "validation_error", "inputs[1]"),  # not inputs.str
            ({"inputs": ["flood", ["flood"]]}, 422, "validation_error", "inputs[1]"),
            ({"inputs": "flood", "parameters": {"top_k": 0}}, 422, "validation_error",
             "parameters.top_k"),
            ({"inputs": "flood", "options": {}}, 422, "validation_error", "options"),
            ({"inputs": ["x"] * 300}, 413, "payload_too_large", "inputs"),
        ]
        for body, status, code, field in bad:
            resp = client.post("/models/crisis/predict", json=body)
            assert resp.status_code == status, (body, resp.text)
            error = resp.json()["error"]
            assert error["code"] == code and error["message"].startswith(f"{field}: "), \
                (body, error)
        for ref in ("Not%20a%20ref!", "crisis%0A", "crisis:%D9%A3"):  # newline, Arabic-Indic 3
            resp = client.post(f"/models/{ref}/predict", json={"inputs": "flood"})
            assert resp.status_code == 422, (ref, resp.text)
            assert resp.json()["error"]["details"]["field"] == "ref"
        assert client.post("/models/crisis/predict", json={"inputs": "flood"},
                           headers={"Authorization": ""}).status_code == 401
    record_input("text with no visible content, control characters or over the limit",
                 ["POST /models/{ref}/predict (HF contract, real API process)"],
                 ["an invisible text among good ones", "NUL as the single input",
                  "an empty list", "a number as inputs", "a number or a list among the inputs",
                  "300 inputs", "ref 'Not a ref!', with a trailing newline or non-ASCII digits"],
                 ["422 invalid_text naming inputs[1] / inputs", "422 naming inputs",
                  "422 naming inputs[1]", "413 naming inputs", "422 naming ref"])
