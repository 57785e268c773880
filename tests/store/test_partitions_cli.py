"""``nextbest partitions``: creates the months ahead on PostgreSQL and says what it holds; on SQLite there
is nothing to do; a bad --months-ahead is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextbest.cli import main
from nextbest.store import Database, upgrade
from nextbest.store.partitions import partitions
from tests.conftest import PG_URL
from tests.store import test_partitions

url = test_partitions.url  # the fixture: a PostgreSQL database of this test's own


def test_on_sqlite_there_is_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    upgrade(Database(url))
    assert main(["partitions", "--database-url", url]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("months", ["-1", "121"], ids=["negative", "too-many"])
def test_a_bad_months_ahead_is_one_line_and_exit_2(months: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["partitions", "--months-ahead", months, "--database-url", "sqlite:///unused.db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--months-ahead must be between 0 and 120" in err


@pytest.mark.slow  # migrates a PostgreSQL database of its own
@pytest.mark.skipif(not PG_URL, reason="NEXTBEST_TEST_DATABASE_URL is not set")
def test_on_postgresql_it_creates_the_months_ahead(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = Database(url)
    upgrade(db)
    with db.reader.connect() as conn:
        before = len(partitions(conn, "events"))
    assert main(["partitions", "--months-ahead", "6", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("created 9 partitions: nextbest_partitions.exposures_p")
    assert "events: " in out and "monthly partitions" in out
    with db.reader.connect() as conn:
        assert len(partitions(conn, "events")) == before + 3
    assert main(["partitions", "--months-ahead", "6", "--database-url", url]) == 0
    assert capsys.readouterr().out.startswith("created 0 partitions\n")
    db.dispose()
