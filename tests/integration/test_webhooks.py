"""Webhooks end to end on real processes: a job with `notify.url` reaches a receiver on a
loopback server (allowed explicitly by the operator's TAILOR_WEBHOOK_ALLOW), signed; a
receiver that fails is retried with backoff and leaves the job exactly as it was. Embedded
(SQLite + filesystem broker, `python -m app.serve`) and distributed (PostgreSQL + Redis, API
and worker apart)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, verify
from tests.integration.lifecycle import upload
from tests.support import Stack, job_body, wait_for, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = "whsec-integration-5f0c2a"
WEBHOOK_ENV = {"TAILOR_WEBHOOK_SECRET": SECRET, "TAILOR_WEBHOOK_ALLOW": "127.0.0.1",
               "TAILOR_WEBHOOK_MAX_RETRIES": "1", "TAILOR_WEBHOOK_RETRY_BACKOFF_SECONDS": "1",
               "TAILOR_WEBHOOK_RETRY_BACKOFF_MAX_SECONDS": "1"}
EVENTS = {"version.registered", "job.succeeded"}


class Receiver(ThreadingHTTPServer):
    """Records every POST; /flaky answers 500 to each delivery's first attempt and 200 after,
    anything else 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def of(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.calls if c["path"] == path]


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 -- http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            seen = [c for c in self.server.calls
                    if c["headers"][DELIVERY_HEADER] == self.headers[DELIVERY_HEADER]]
            self.server.calls.append({"path": self.path, "headers": self.headers,
                                      "body": body})
        failing = self.path == "/flaky" and not seen
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["embedded", "distributed"])
def stack(request: pytest.FixtureRequest) -> Stack:
    s: Stack = request.getfixturevalue(f"{request.param}_stack" if request.param == "embedded"
                                       else "distributed")
    s.env.update(WEBHOOK_ENV)
    if request.param == "embedded":
        s.start_serve([sys.executable, "-m", "app.serve"])  # API + supervised worker
    else:
        s.start_api(worker=True)
    return s


def _webhook_events(client, job_id: str) -> list[dict[str, Any]]:
    text = client.get(f"/jobs/{job_id}/events", headers={"Accept": "text/event-stream"},
                      timeout=10).text
    found = []
    for block in text.split("\n\n"):
        if "event: webhook" in block:
            data = next(line[6:] for line in block.splitlines() if line.startswith("data: "))
            found.append(json.loads(data)["data"])
    return found


def test_jobs_notify_a_loopback_receiver_signed_retried_and_never_harmed(stack, receiver,
                                                                        tiny_models):
    client = stack.client()
    ds, ev = upload(client)

    # A receiver that fails once: the job is untouched, and each event is retried with
    # backoff, then delivered. (A receiver that never answers 2xx: tests/unit/test_webhooks.)
    flaky = client.post("/jobs", json={
        **job_body("crisis", ds, *tiny_models, eval_dataset_id=ev),
        "notify": {"url": receiver.url("/flaky")}}).json()
    job = wait_job(client, flaky["id"], timeout=240)
    assert job["state"] == "succeeded", job
    wait_for(lambda: len(receiver.of("/flaky")) == 4, 60,
             what="each event failed once, then delivered")
    calls = receiver.of("/flaky")
    final = client.get(f"/jobs/{job['id']}").json()
    for call in calls:
        headers, body = call["headers"], call["body"]
        assert verify(SECRET, headers, body), "the signature must verify"
        assert not verify("wrong-secret", headers, body)
        sent = json.loads(body)
        assert sent["id"] == job["id"] and sent["state"] == "succeeded"
        assert sent["model"] == final["model"] == {"name": "crisis", "version": 1}
        assert sent == json.loads(json.dumps(final))  # the job object, as GET returns it
        assert headers["Content-Type"] == "application/json"
        assert headers[DELIVERY_HEADER] == f"{job['id']}.{headers[EVENT_HEADER]}"
    assert sorted(c["headers"][EVENT_HEADER] for c in calls) == sorted([*EVENTS, *EVENTS])
    wait_for(lambda: sum(e["outcome"] == "delivered"
                         for e in _webhook_events(client, job["id"])) == 2, 30,
             what="delivered events")
    recorded = {(e["event"], e["attempt"], e["outcome"], e["status"])
                for e in _webhook_events(client, job["id"])}
    assert recorded == {(name, 1, "failed", 500) for name in EVENTS} | {
        (name, 2, "delivered", 200) for name in EVENTS}
    logs = stack.logs()
    assert SECRET not in logs
