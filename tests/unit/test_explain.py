"""/classify with `"explain": true`: token attributions to the chosen label (captum), their
offsets into the text, the limits, and isolation from the requests it runs beside."""

from __future__ import annotations

import threading

from app.serving import explain as explain_module
from tests.fixtures.versions import register_tiny

TEXTS = ["Flood water rose in the city", "the team won the football match"]


def _post(client, **body):
    return client.post("/classify", json={"model": "crisis", "texts": TEXTS, **body})


def test_explanations_name_the_label_and_point_into_the_text(client, tiny_models):
    register_tiny(tiny_models[1])
    plain = _post(client)
    assert plain.status_code == 200, plain.text
    assert all("explanation" not in r for r in plain.json()["results"])
    resp = _post(client, explain=True)
    assert resp.status_code == 200, resp.text
    for text, result, alone in zip(TEXTS, resp.json()["results"], plain.json()["results"],
                                   strict=True):
        assert result["scores"] == alone["scores"]  # explaining changes no answer
        explanation = result["explanation"]
        top = max(result["scores"], key=result["scores"].get)
        assert explanation["label"] == top and explanation["method"] == "integrated_gradients"
        words = [text[t["start"]:t["end"]] for t in explanation["tokens"]]
        assert words == text.split()  # the tiny tokenizer: one token per word
        assert [t["token"] for t in explanation["tokens"]] == words
        assert any(t["attribution"] != 0 for t in explanation["tokens"])
        # integrated gradients' completeness: the attributions sum to the score change
        assert explanation["convergence_delta"] < 0.05
    pool = client.app.state.pool
    assert all(s.pins == 0 for s in pool.served.values())  # the extra pin was given back


def test_more_texts_than_the_explain_limit_is_a_422_naming_texts(client, tiny_models):
    register_tiny(tiny_models[1])
    resp = client.post("/classify", json={"model": "crisis", "texts": ["flood"] * 9,
                                          "explain": True})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "too_many_to_explain"
    assert error["details"] == {"field": "texts", "max_texts": 8}  # so clients can split
    assert "8" in error["message"]
    # the same texts without explain are fine
    assert client.post("/classify", json={"model": "crisis", "texts": ["flood"] * 9}
                       ).status_code == 200


def test_a_failing_explanation_fails_only_its_request(client, tiny_models, monkeypatch):
    register_tiny(tiny_models[1])
    assert _post(client).status_code == 200  # loaded
    entered, release = threading.Event(), threading.Event()

    def broken(*args, **kwargs):
        entered.set()
        release.wait(10)  # the explanation is under way while another request is served
        raise RuntimeError("attribution exploded")

    monkeypatch.setattr(explain_module, "explain_text", broken)
    answers: dict[str, object] = {}
    thread = threading.Thread(target=lambda: answers.update(explained=_post(client,
                                                                              explain=True)))
    thread.start()
    assert entered.wait(10)
    other = _post(client)  # served while the explanation runs
    release.set()
    thread.join(20)
    assert other.status_code == 200 and len(other.json()["results"]) == 2
    failed = answers["explained"]
    assert failed.status_code == 503, failed.text  # type: ignore[attr-defined]
    assert failed.json()["error"]["code"] == "explanation_failed"  # type: ignore[attr-defined]
    pool, explainer = client.app.state.pool, client.app.state.explainer
    assert all(s.pins == 0 for s in pool.served.values())
    assert explainer._admitted == 0
    monkeypatch.undo()
    assert _post(client, explain=True).status_code == 200  # and the next one works


def test_explanation_requests_past_the_bound_get_429(client, tiny_models, monkeypatch):
    register_tiny(tiny_models[1])
    explainer = client.app.state.explainer
    for _ in range(explainer.max_waiting):
        explainer.admit()  # as if that many were running or waiting
    try:
        resp = _post(client, explain=True)
        assert resp.status_code == 429 and resp.headers["Retry-After"]
        assert _post(client).status_code == 200  # plain requests are not affected
    finally:
        for _ in range(explainer.max_waiting):
            explainer.cancel()
    assert _post(client, explain=True).status_code == 200
