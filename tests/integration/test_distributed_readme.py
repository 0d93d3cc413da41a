"""The README's distributed setup without Docker, run as written on real PostgreSQL and Redis.

The commands come from the README block marked `distributed-setup`; only what must differ on
a test machine is substituted (each substitution must hit, so the README cannot drift away
from what runs): the servers' ports, the folder, the API's port, and the superuser's psql
connection (`sudo -u postgres psql` becomes a TCP connection as `postgres`). Two workers
started by the same command must get different node names, and the job shows which one ran it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.dbsetup import postgres_url, setup_sql
from tests.conftest import service_url
from tests.integration.lifecycle import upload
from tests.support import ROOT, free_port, job_body, make_env, wait_for, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARKER = "<!-- distributed-setup:"
KEY = "admin-secret"


def readme_block() -> str:
    """The bash block right after the README's `distributed-setup` marker."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(re.escape(MARKER) + r"[^\n]*\n```bash\n(.*?)```", readme, re.S)
    assert match, "README lacks the bash block right after the distributed-setup marker"
    return match.group(1)


def substitute(block: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in block, f"the README block no longer contains {old!r}"
        block = block.replace(old, new)
    return block


@contextlib.contextmanager
def running(script: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the block with bash in a session of its own; stop every process it left behind."""
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", str(script)], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not _group_alive(proc.pid), grace, what="the block's processes")
                break
        proc.wait(5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def servers(redis_url: str) -> Iterator[dict[str, str]]:
    """The test PostgreSQL (superuser `postgres`) and an empty Redis; the role and database
    the block creates are dropped afterwards."""
    admin_url = service_url("TAILOR_TEST_DATABASE_URL")
    pg = make_url(admin_url)
    yield {"pg_port": str(pg.port), "redis_port": str(make_url(redis_url).port)}
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "tailor" WITH (FORCE)'))
        conn.execute(text('DROP ROLE IF EXISTS "tailor"'))
    admin.dispose()


def test_the_readme_distributed_commands_run_two_workers_and_a_job(tmp_path, servers,
                                                                   tiny_models):
    home, api_port = tmp_path / "distributed", free_port()
    psql = Path(os.environ.get("TAILOR_TEST_PG_BIN", "/usr/bin")) / "psql"
    block = substitute(readme_block(), {
        "localhost:5432": f"127.0.0.1:{servers['pg_port']}",
        "localhost:6379": f"127.0.0.1:{servers['redis_port']}",
        "$PWD/var/distributed": str(home),
        "--port 8000": f"--port {api_port}",
        "sudo -u postgres psql": f"{psql} -h 127.0.0.1 -p {servers['pg_port']} -U postgres "
                                 "-d postgres",
    })
    assert block.count("tailor worker &") == 2
    exported = re.search(r"^export TAILOR_DATABASE_URL=(\S+)", block, re.M)
    assert exported, "the block sets TAILOR_DATABASE_URL"
    database_url = exported.group(1)
    script = tmp_path / "block.sh"
    # Fail at the first failing step, pipes included: the block itself has no `set -e`.
    script.write_text("set -eo pipefail\n" + block)
    env = {**make_env(home), "PYTHONPATH": str(ROOT)}
    log = tmp_path / "block.log"
    url = f"http://127.0.0.1:{api_port}"
    with running(script, env, log) as bash:
        try:
            assert bash.wait(180) == 0, "a foreground step failed"  # dbsetup and migrations
            ready = wait_for(lambda: _ready_with(url, workers=2), 180, interval=1,
                             what="/readyz with two workers")
            assert ready["checks"]["artifacts"] == "ok"
            nodes = _worker_nodes(database_url)
            with httpx.Client(base_url=url, timeout=60,
                              headers={"Authorization": f"Bearer {KEY}"}) as client:
                dataset, _ = upload(client)
                resp = client.post("/jobs", json=job_body("crisis", dataset, *tiny_models))
                assert resp.status_code == 202, resp.text
                job = wait_job(client, resp.json()["id"], timeout=300)
            files = _registered_files(database_url, home / "artifacts")
        except BaseException:
            print(log.read_text(errors="replace")[-8000:])
            raise
    output = log.read_text(errors="replace")
    assert job["state"] == "succeeded", job

    host = socket.gethostname()
    assert len(nodes) == 2 and len(set(nodes)) == 2, nodes
    assert all(re.fullmatch(rf"tailor-\d+@{re.escape(host)}", n) for n in nodes), nodes
    assert job["worker"] in nodes and job["lease_expires_at"] is None
    assert f"job {job['id']} claimed by {job['worker']}" in output
    assert "DuplicateNodenameWarning" not in output

    # Every registered file gets the umask's mode, like student.json (adapter and head were
    # 0600), so an API running as another user can read them.
    modes = {stat.S_IMODE(path.stat().st_mode) for path in files}
    assert len(files) == 3
    umask = os.umask(0)
    os.umask(umask)
    assert modes == {0o666 & ~umask}

    # The database step can be run again.
    setup = next(line for line in block.splitlines() if "app.dbsetup" in line)
    again = subprocess.run(["bash", "-c", "set -eo pipefail\n" + block.split(setup)[0]
                            + setup], cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr


def _ready_with(url: str, workers: int) -> dict | None:
    body = httpx.get(f"{url}/readyz", timeout=5).json()
    return body if body["status"] == "ready" and body["workers"] == workers else None


def _registered_files(database_url: str, store: Path) -> list[Path]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT artifact_path, files FROM model_versions")).one()
    engine.dispose()
    return [store / row.artifact_path / name for name in row.files]


def _worker_nodes(database_url: str) -> list[str]:
    """The node names of the workers beating now (heartbeat ids are `<node>/<pid>`)."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM worker_heartbeats")).scalars().all()
    engine.dispose()
    return sorted(i.rsplit("/", 1)[0] for i in ids)


def test_dbsetup_sql_runs_twice_in_psql_with_awkward_names():
    admin_url = make_url(service_url("TAILOR_TEST_DATABASE_URL"))
    psql = Path(os.environ.get("TAILOR_TEST_PG_BIN", "/usr/bin")) / "psql"
    sql = setup_sql(postgres_url("postgresql+psycopg://o%27brien:p%27w%24%24@h/db%22x"))
    command = [str(psql), "-h", "127.0.0.1", "-p", str(admin_url.port), "-U", "postgres",
               "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        for _ in range(2):  # the second run finds both and only re-sets password and owner
            done = subprocess.run(command, input=sql, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        with admin.connect() as conn:
            owner = conn.execute(text(
                "SELECT r.rolname, r.rolcanlogin, r.rolpassword IS NOT NULL FROM pg_database d "
                "JOIN pg_authid r ON r.oid = d.datdba WHERE d.datname = :d"),
                {"d": 'db"x'}).one()
        assert tuple(owner) == ("o'brien", True, True)
    finally:
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "db""x" WITH (FORCE)'))
            conn.execute(text('DROP ROLE IF EXISTS "o\'brien"'))
        admin.dispose()
