"""docker-compose.yml cannot run here (no Docker engine), so it is checked by reading it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_compose_defines_the_distributed_setup():
    assert set(SERVICES) == {"postgres", "redis", "migrate", "api", "worker"}
    for name in ("postgres", "redis", "api", "worker"):
        assert SERVICES[name]["healthcheck"]["test"], f"{name} needs a healthcheck"
    assert SERVICES["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    gpu = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    worker = SERVICES["worker"]
    assert worker["command"][:3] == ["python", "-m", "worker"]  # its defaults: the queues
    assert "-Q" not in worker["command"]  # so it consumes distill and notify (below)
    node = worker["command"][worker["command"].index("-n") + 1]
    assert node == "tailor@%h"
    assert "-d tailor@$$HOSTNAME" in worker["healthcheck"]["test"][1], "pings its own node"


def test_python_m_worker_consumes_distill_and_notify_with_a_node_name_per_process():
    from worker.__main__ import celery_argv
    from worker.celery_app import NOTIFY_QUEUE, QUEUE

    first, second = celery_argv([], pid=101), celery_argv([], pid=102)
    # jobs, and webhook deliveries
    assert first[first.index("-Q") + 1].split(",") == [QUEUE, NOTIFY_QUEUE]
    assert first[first.index("-l") + 1] == "INFO"
    assert first[first.index("-n") + 1] == "tailor-101@%h"
    assert second[second.index("-n") + 1] == "tailor-102@%h"
    # Options a user adds come last, where Celery's parser lets them win.
    assert celery_argv(["-n", "gpu0@%h"], pid=101)[-2:] == ["-n", "gpu0@%h"]


def test_compose_env_points_at_postgres_and_redis_and_names_real_settings():
    fields = {f"TAILOR_{name.upper()}" for name in Settings.model_fields}
    for name in ("migrate", "api", "worker"):
        env = SERVICES[name]["environment"]
        assert env["TAILOR_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["TAILOR_DATABASE_URL"]
        assert env["TAILOR_BROKER_URL"] == "redis://redis:6379/0"
        unknown = {k for k in env if k.startswith("TAILOR_")} - fields
        assert not unknown, f"{name} sets unknown settings {unknown}"
    # Binding beyond loopback requires API keys (Settings refuses it otherwise).
    assert SERVICES["api"]["environment"]["TAILOR_HOST"] == "0.0.0.0"
    assert "TAILOR_API_KEYS" in SERVICES["api"]["environment"]


def test_compose_volumes_are_declared_and_shared_by_api_and_worker():
    declared = set(COMPOSE["volumes"])
    used = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", [])}
    assert used <= declared
    api = {v.split(":")[0] for v in SERVICES["api"]["volumes"]}
    worker = {v.split(":")[0] for v in SERVICES["worker"]["volumes"]}
    assert "artifacts" in api & worker, "workers write the artifacts the API serves"


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"TAILOR_{name.upper()}" in readme, f"README lacks TAILOR_{name.upper()}"
    commands = re.findall(r"make (demo|test)", readme)
    assert commands[:2] == ["demo", "test"], "README shows `make demo` and `make test` first"


def test_unsafe_bind_without_keys_is_refused():
    import pytest

    with pytest.raises(ValueError, match="TAILOR_API_KEYS"):
        Settings(host="0.0.0.0", api_keys="")
    assert Settings(host="0.0.0.0", api_keys="k").host == "0.0.0.0"
