"""Shared pytest fixtures. Each section belongs to the tests named in its header."""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------------------------
# PostgreSQL server on loopback (tests/test_dse_postgres.py: distributed design-space exploration)
#
# A real server is started per test session: initdb into a fresh directory, pg_ctl start on a free port
# on 127.0.0.1 with trust authentication. initdb refuses to run as root, so as root the server runs as
# the `postgres` user (or `nobody`). Binaries come from $KVNAND_PG_BIN, PATH or /usr/lib/postgresql/*/bin.
# Without them the tests skip, except under CI (CI=true), where a missing server is a failure.
# ---------------------------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    candidates = [os.environ.get("KVNAND_PG_BIN", "")]
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                         reverse=True)
    for d in candidates:
        if d and all(os.access(Path(d) / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    return None


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the PostgreSQL tests, but {reason}", pytrace=False)
    pytest.skip(reason)


def _as_server_user(cmd: list[str]) -> tuple[list[str], str | None]:
    """The command as an unprivileged user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return cmd, None
    user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
    if user is None:
        _unavailable("running as root and no unprivileged user (postgres, nobody) to run the server")
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *cmd], user
    return ["su", "-s", "/bin/sh", user, "-c", shlex.join(cmd)], user


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """SQLAlchemy URL of a fresh database on a PostgreSQL server private to this test session."""
    bindir = _pg_bin()
    if bindir is None:
        _unavailable("PostgreSQL binaries (initdb, pg_ctl, postgres) not found: install postgresql or set "
                     "KVNAND_PG_BIN to their directory")
    try:
        import psycopg2
    except ImportError:
        _unavailable("the PostgreSQL driver psycopg2 is not installed (pip install -e '.[dev]')")
    # not pytest's tmp_path: its parents are private to root, and the server may run as another user
    base = Path(tempfile.mkdtemp(prefix="kvnand-pg-"))
    data, log = base / "data", base / "server.log"
    _, user = _as_server_user(["true"])
    if user is not None:
        shutil.chown(base, user)
    port = _free_port()

    def run(*args: str) -> None:
        cmd, _ = _as_server_user([str(bindir / args[0]), *args[1:]])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                               f"{server_log}")

    try:
        run("initdb", "-D", str(data), "-U", "kvnand", "--auth=trust", "-E", "UTF8", "--no-sync")
        run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="kvnand", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE kvnand_dse")
        conn.close()
        yield f"postgresql+psycopg2://kvnand@127.0.0.1:{port}/kvnand_dse"
    finally:
        if (data / "postmaster.pid").exists():
            try:
                run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass  # already gone; the directory is removed either way
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# The kvnand command in-process (tests of report, trace, reliability): the real exit-code path of cli.main.
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def kvnand_cli(tmp_path, monkeypatch, capsys):
    """`kvnand_cli(*args)` runs `kvnand ARGS` in a fresh working directory with its own result cache and
    returns (exit code, stdout, stderr)."""
    from kvnand import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KVNAND_CACHE_DIR", str(tmp_path / "cache"))

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["kvnand", *args])
        capsys.readouterr()
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


# ---------------------------------------------------------------------------------------------------------
# Golden result records (tests/test_golden.py). `pytest --regen-golden` rewrites them before any test runs;
# nothing else ever does (a missing or stale golden file fails the tests instead).
# ---------------------------------------------------------------------------------------------------------
def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="re-evaluate every golden case and rewrite tests/golden/*.json, then run the tests")


def pytest_sessionstart(session):
    if session.config.getoption("--regen-golden"):
        from golden import regenerate

        regenerate(log=lambda line: None)


def pytest_report_header(config):
    if config.getoption("--regen-golden"):
        return "golden records: tests/golden/*.json regenerated (--regen-golden)"
    return None


@pytest.fixture
def slow_smoke(tmp_path) -> Path:
    """The smoke DSE space with five workload points and a lifetime objective (reliability per point), so a trial
    takes tens of milliseconds: long enough for a second worker to start, or a watcher to see a trial running,
    before the budget is done (smoke trials take a few ms). Same study name, 'smoke'."""
    import yaml

    from kvnand.paths import DSE_ROOT

    space = yaml.safe_load((DSE_ROOT / "smoke.yaml").read_text())
    space["workload"]["contexts"] = {"1k": 1, "10k": 1, "30k": 1, "50k": 1, "100k": 1}
    space["objectives"] = ["latency_s", "energy_j_per_token", "lifetime_years"]
    path = tmp_path / "slow-smoke.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path
