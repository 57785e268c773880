"""A server that cannot start says why in one line: a busy port, a database that does not answer (after
waiting for it), one that does not exist, or one without nextbest's tables."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from nextbest.cli import main
from nextbest.errors import StartupError
from nextbest.server import NextbestServer
from nextbest.server.startup import require_schema, wait_for_database
from nextbest.settings import Settings
from nextbest.store import Database

from ..conftest import PG_URL

UNREACHABLE = "postgresql+psycopg://postgres:secret@127.0.0.1:1/none"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_an_unreachable_database_is_waited_for_with_backoff_then_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = Database(UNREACHABLE)
    clock = FakeClock()
    caplog.set_level(logging.WARNING)
    with pytest.raises(StartupError) as info:
        wait_for_database(db, 5.0, sleep=clock.sleep, clock=lambda: clock.now)
    db.dispose()
    assert clock.sleeps[:4] == [0.25, 0.5, 1.0, 2.0]
    assert sum(clock.sleeps) == pytest.approx(5.0)
    message = str(info.value)
    assert "\n" not in message
    assert "did not answer within 5 s (--database-wait)" in message
    assert "secret" not in message and "secret" not in caplog.text
    assert "trying again in" in caplog.text


def test_no_wait_fails_at_once_unless_the_database_can_come_later() -> None:
    db = Database(UNREACHABLE)
    clock = FakeClock()
    with pytest.raises(StartupError):
        wait_for_database(db, 0.0, sleep=clock.sleep, clock=lambda: clock.now)
    assert wait_for_database(db, 0.0, required=False, sleep=clock.sleep, clock=lambda: clock.now) is False
    db.dispose()
    assert clock.sleeps == []


@pytest.mark.skipif(not PG_URL, reason="NEXTBEST_TEST_DATABASE_URL is not set")
def test_a_missing_postgresql_database_is_not_waited_for() -> None:
    url = make_url(PG_URL).set(database="nextbest_no_such_database").render_as_string(hide_password=False)
    db = Database(url)
    clock = FakeClock()
    with pytest.raises(StartupError, match="does not exist"):
        wait_for_database(db, 30.0, sleep=clock.sleep, clock=lambda: clock.now)
    db.dispose()
    assert clock.sleeps == []


def test_a_database_without_tables_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(StartupError, match="has no nextbest tables: run `nextbest migrate`"):
        require_schema(db)
    db.dispose()


def test_a_database_behind_the_schema_is_refused(migrated: str) -> None:
    db = Database(migrated)
    require_schema(db)  # at head: fine
    engine = create_engine(migrated)
    with engine.begin() as conn:
        (old,) = conn.execute(text("SELECT version_num FROM alembic_version")).one()
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        with pytest.raises(StartupError, match="is at schema revision 0001"):
            require_schema(db)
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": old})
        engine.dispose()
        db.dispose()


@pytest.mark.slow
def test_a_busy_port_is_one_line(busy_port: int, tmp_path: Path) -> None:
    settings = Settings(port=busy_port, database_url=f"sqlite:///{tmp_path / 'n.db'}")
    with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{busy_port}: the port is in use"):
        NextbestServer(settings)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--no-migrate"], "has no nextbest tables"),
        (["--database-url", UNREACHABLE, "--database-wait", "0"], "did not answer within 0 s"),
    ],
    ids=["no-tables", "unreachable"],
)
def test_serve_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    argv = ["serve", "--port", "0", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # after the start's log lines, the one line that says what to fix
    assert last.startswith("nextbest: ") and expected in last, err


@pytest.mark.slow
def test_the_default_database_does_not_depend_on_the_working_directory(tmp_path: Path) -> None:
    code = "from nextbest.settings import Settings; print(Settings().database_url)"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("NEXTBEST_DATABASE_URL", None)
    urls = {
        subprocess.run(
            [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        for cwd in (tmp_path, Path.cwd())
    }
    assert urls == {f"sqlite:///{tmp_path / 'data' / 'nextbest' / 'nextbest.db'}"}


def test_report_on_a_database_without_tables_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert main(["report", "--experiment", "global_holdout", "--database-url", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("nextbest: the database") and "has no nextbest tables" in err
    assert "OperationalError" not in err  # (earlier in-process `serve` tests may leave logging handlers)
