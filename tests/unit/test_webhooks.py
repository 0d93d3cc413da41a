"""Webhooks without services: the target policy, the signature scheme, refusals at
submission (422 naming `notify.url`), and that the secret is masked."""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.core.config import get_settings
from app.core.secrets import MASK, redact
from app.webhooks.delivery import REFUSED, DeliveryFailed, deliver
from app.webhooks.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
    signed_headers,
    verify,
)
from app.webhooks.targets import TargetRefused, WebhookPolicy

SECRET = "whsec-test-0123456789"


@pytest.mark.parametrize("url, code", [
    ("http://10.0.0.5/hook", "webhook_target_not_allowed"),        # private
    ("http://192.168.1.1/hook", "webhook_target_not_allowed"),
    ("http://127.0.0.1:8000/hook", "webhook_target_not_allowed"),  # loopback
    ("http://[::1]/hook", "webhook_target_not_allowed"),
    ("http://[::ffff:127.0.0.1]/hook", "webhook_target_not_allowed"),  # mapped loopback
    ("http://169.254.169.254/latest/meta-data/", "webhook_target_not_allowed"),  # metadata
    ("http://100.100.100.200/", "webhook_target_not_allowed"),      # shared (Alibaba meta)
    ("http://0.0.0.0/", "webhook_target_not_allowed"),
    ("http://[::127.0.0.1]/", "webhook_target_not_allowed"),  # IPv4-compatible (reserved)
    ("http://[64:ff9b::a9fe:a9fe]/", "webhook_target_not_allowed"),  # NAT64 of metadata
    ("http://[2002:7f00:1::]/", "webhook_target_not_allowed"),  # 6to4 of loopback
    ("http://hooks.example.com:0/", "invalid_webhook_url"),
    ("http://hooks example.com/", "invalid_webhook_url"),  # never resolves: retried an hour
    ("http://hooks.example.com/x\r\nX-Injected: 1", "invalid_webhook_url"),
    (" http://hooks.example.com/", "invalid_webhook_url"),
    ("ftp://hooks.example.com/x", "invalid_webhook_url"),
    ("file:///etc/passwd", "invalid_webhook_url"),
    ("javascript:alert(1)", "invalid_webhook_url"),
    ("http:///no-host", "invalid_webhook_url"),
    ("http://hooks.example.com:99999/", "invalid_webhook_url"),
    ("https://user:pass@hooks.example.com/x", "credentials_in_spec"),
    ("https://token@hooks.example.com/x", "credentials_in_spec"),
])
def test_the_policy_refuses_internal_addresses_odd_schemes_and_credentials(url, code):
    policy = WebhookPolicy.parse("*")
    with pytest.raises(TargetRefused) as refused:
        policy.check_url(url)
    assert refused.value.code == code


def test_public_ipv6_and_6to4_of_a_public_address_stay_allowed():
    policy = WebhookPolicy.parse("*")
    assert policy.check_url("http://[2606:4700:4700::1111]/hook")
    assert policy.check_url("http://[2002:5db8:d822::1]/hook")  # 6to4 of 93.184.216.34


def test_only_hosts_the_list_names_are_allowed():
    policy = WebhookPolicy.parse("hooks.example.com, *.alerts.example.org")
    assert policy.check_url("https://hooks.example.com/x").hostname == "hooks.example.com"
    assert policy.check_url("https://a.b.alerts.example.org/x")
    for url in ("https://example.com/", "https://alerts.example.org.evil.com/",
                "https://8.8.8.8/", "https://evilhooks.example.com/"):
        with pytest.raises(TargetRefused) as refused:
            policy.check_url(url)
        assert refused.value.code == "webhook_target_not_allowed", url


def test_loopback_and_private_networks_pass_only_when_named():
    policy = WebhookPolicy.parse("127.0.0.1,10.1.0.0/16")
    assert policy.check_url("http://127.0.0.1:8080/hook")
    assert policy.check_url("http://10.1.2.3/hook")
    for url in ("http://127.0.0.2/", "http://10.2.0.1/", "http://169.254.169.254/"):
        with pytest.raises(TargetRefused):
            policy.check_url(url)


def test_a_name_is_refused_when_any_address_it_resolves_to_is_internal(monkeypatch):
    """What stops DNS rebinding: the addresses are checked, then the POST goes to them."""
    answers = {"hooks.example.com": ["93.184.216.34", "10.0.0.7"]}

    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    policy = WebhookPolicy.parse("hooks.example.com")
    parts = policy.check_url("https://hooks.example.com/x")
    with pytest.raises(TargetRefused):
        policy.resolve(parts)
    answers["hooks.example.com"] = ["93.184.216.34"]
    assert policy.resolve(parts) == [ipaddress.ip_address("93.184.216.34")]


def test_a_bad_allow_list_entry_stops_the_process_at_start(monkeypatch):
    monkeypatch.setenv("TAILOR_WEBHOOK_ALLOW", "hooks.example.com, http://x/")
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="TAILOR_WEBHOOK_ALLOW"):
        get_settings()
    get_settings.cache_clear()


def test_the_signature_covers_timestamp_and_body_and_expires():
    body = b'{"id": "job_1", "state": "succeeded"}'
    headers = signed_headers(SECRET, body, event="job.succeeded", delivery="job_1.x",
                             now=1_700_000_000)
    assert headers[SIGNATURE_HEADER] == signature(SECRET, 1_700_000_000, body)
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verify(SECRET, headers, body, now=1_700_000_010)
    assert not verify(SECRET, headers, body + b" ", now=1_700_000_010)  # body changed
    assert not verify("other-secret", headers, body, now=1_700_000_010)
    assert not verify(SECRET, headers, body, now=1_700_000_000 + 301)  # a late replay
    moved = {**headers, TIMESTAMP_HEADER: str(1_700_000_300)}  # replay with a new timestamp
    assert not verify(SECRET, moved, body, now=1_700_000_300)


@pytest.fixture
def webhooks_on(embedded, monkeypatch):
    monkeypatch.setenv("TAILOR_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TAILOR_WEBHOOK_ALLOW", "*")
    get_settings.cache_clear()


def _submit(client, tiny_models, url: str):
    ds = client.post("/datasets", json={"name": "c", "records": [
        {"text": t} for t in ("flood in the city", "team won the match", "fire at the coast",
                              "stock market rose today", "storm hit the village")]}).json()
    return client.post("/jobs", json={
        "name": "crisis", "task": {"labels": [{"name": "crisis"}, {"name": "calm",
                                                                   "verbalizer": "none"}]},
        "teacher": {"model": tiny_models[0]}, "student": {"model": tiny_models[1]},
        "data": {"dataset_id": ds["id"]}, "notify": {"url": url}})


@pytest.mark.parametrize("url, code", [
    ("http://10.0.0.5/hook", "webhook_target_not_allowed"),
    ("http://127.0.0.1:9/hook", "webhook_target_not_allowed"),
    ("http://localhost:9/hook", "webhook_target_not_allowed"),  # resolves to loopback
    ("http://169.254.169.254/latest/meta-data/", "webhook_target_not_allowed"),
    ("gopher://hooks.example.com/", "invalid_webhook_url"),
    ("https://user:secret@hooks.example.com/x", "credentials_in_spec"),
])
def test_submission_refuses_targets_with_422_naming_notify_url(webhooks_on, client,
                                                               tiny_models, url, code):
    resp = _submit(client, tiny_models, url)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["details"] == {"field": "notify.url"}
    assert client.get("/jobs").json()["jobs"] == []  # nothing created


def test_without_operator_config_notify_is_refused(client, tiny_models):
    resp = _submit(client, tiny_models, "https://hooks.example.com/x")
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "webhooks_disabled"


def test_a_job_without_notify_keeps_its_spec_as_before(webhooks_on, client, tiny_models):
    ds = client.post("/datasets", json={"name": "c", "records": [{"text": "flood"}]}).json()
    body = {"name": "crisis", "task": {"labels": [{"name": "a"}, {"name": "b"}]},
            "data": {"dataset_id": ds["id"]}}
    from app.jobs.schemas import JobCreate
    from app.jobs.service import normalized_spec

    assert "notify" not in normalized_spec(JobCreate.model_validate(body))


def test_the_secret_is_masked(webhooks_on):
    assert redact(f"signing with {SECRET} failed") == f"signing with {MASK} failed"


class _Down(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 -- http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _job_events(job_id: str) -> list[dict]:
    from app.core.db import session_scope
    from app.jobs.service import events_after

    with session_scope() as db:
        return [e.data for e in events_after(db=db, job_id=job_id, after_id=0)
                if e.kind == "webhook"]


def test_a_receiver_that_fails_is_recorded_and_gives_up_without_touching_the_job(
        embedded, monkeypatch, client, tiny_models):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Down)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TAILOR_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TAILOR_WEBHOOK_ALLOW", "127.0.0.1")
    get_settings.cache_clear()
    try:
        resp = _submit(client, tiny_models, f"http://127.0.0.1:{server.server_address[1]}/h")
        assert resp.status_code == 202, resp.text
        job = resp.json()
        with pytest.raises(DeliveryFailed):
            deliver(job["id"], "job.cancelled", attempt=1, last=False)
        with pytest.raises(DeliveryFailed):
            deliver(job["id"], "job.cancelled", attempt=2, last=True)
    finally:
        server.shutdown()
        server.server_close()
    assert [(e["attempt"], e["outcome"], e["status"]) for e in _job_events(job["id"])] == [
        (1, "failed", 503), (2, "gave_up", 503)]
    after = client.get(f"/jobs/{job['id']}").json()
    assert (after["state"], after["error"]) == (job["state"], job["error"])


def test_a_name_that_rebinds_to_an_internal_address_is_refused_at_send(embedded, monkeypatch,
                                                                        client, tiny_models):
    """Checked public at submission, it resolves to loopback by the time of sending: no
    request leaves, the refusal is recorded, and it is not retried."""
    answer = ["93.184.216.34"]

    def fake_getaddrinfo(host, port, *args, **kwargs):
        assert host == "hooks.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[0], port))]

    def no_request(*args, **kwargs):
        raise AssertionError("a request was sent to a refused address")

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(httpx.Client, "post", no_request)
    monkeypatch.setenv("TAILOR_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TAILOR_WEBHOOK_ALLOW", "hooks.example.com")
    get_settings.cache_clear()
    resp = _submit(client, tiny_models, "https://hooks.example.com/hook")
    assert resp.status_code == 202, resp.text
    answer[0] = "127.0.0.1"
    assert deliver(resp.json()["id"], "job.failed", attempt=1, last=False) == REFUSED
    [event] = _job_events(resp.json()["id"])
    assert event["outcome"] == "refused" and event["code"] == "webhook_target_not_allowed"
