"""The webhook signature: HMAC-SHA256 over the timestamp and the raw body.

Headers on every delivery:
    X-Tailor-Timestamp: 1767225600                 (Unix seconds, when this attempt was signed)
    X-Tailor-Signature: sha256=<hex>               HMAC-SHA256(secret, f"{timestamp}." + body)
    X-Tailor-Event: job.succeeded                  (job.failed, job.cancelled, version.registered)
    X-Tailor-Delivery: job_0123456789abcdef.job.succeeded   (the same on every retry)

A receiver recomputes the HMAC over the timestamp header, a dot and the body bytes exactly
as received, compares in constant time, and refuses a timestamp older than a few minutes:
a captured request replayed later then fails, and one with the timestamp changed no longer
matches its signature. The delivery id lets it drop a retry it has already processed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Tailor-Signature"
TIMESTAMP_HEADER = "X-Tailor-Timestamp"
EVENT_HEADER = "X-Tailor-Event"
DELIVERY_HEADER = "X-Tailor-Delivery"
# Receivers should refuse older timestamps; 5 minutes covers clock skew and slow networks.
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, b"<timestamp>." + body)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(secret: str, body: bytes, *, event: str, delivery: str,
                   now: float | None = None) -> dict[str, str]:
    """The headers of one attempt, signed now."""
    timestamp = int(time.time() if now is None else now)
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(secret, timestamp, body), EVENT_HEADER: event,
            DELIVERY_HEADER: delivery}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *,
           tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> bool:
    """What a receiver does: True if the signature matches and the timestamp is recent.
    `headers` must look names up case-insensitively (as HTTP libraries' headers do)."""
    try:
        timestamp = int(headers[TIMESTAMP_HEADER])
        sent = headers[SIGNATURE_HEADER]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sent, signature(secret, timestamp, body))
