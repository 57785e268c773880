"""nextbest erase | retention | audit against the database: what they print, what they write, and a
one-line message with exit 2 for bad input."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from nextbest.cli import main
from nextbest.domain import Event, EventType
from nextbest.privacy_cli import parse_age
from nextbest.store import Database, Store, upgrade
from nextbest.store.audit import AuditLog
from nextbest.store.pseudonyms import CustomerIds
from tests.store.test_erasure import T0

KEY = "cli-test-key-0123456789"


@pytest.fixture
def url(tmp_path: Path) -> str:
    database_url = f"sqlite:///{tmp_path}/cli.db"
    db = Database(database_url)
    upgrade(db)
    db.dispose()
    return database_url


def _events(url: str, user: str, ids: CustomerIds | None = None, days_ago: int = 0) -> None:
    store = Store(Database(url), ids=ids)
    at = T0 - timedelta(days=days_ago)
    store.record_events([Event(f"{user}-{days_ago}", user, EventType.PRODUCT_VIEWED, at)], at)
    store.close()


def test_erase_then_erase_again_then_audit(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXTBEST_CUSTOMER_ID_KEY", KEY)
    _events(url, "c-1", CustomerIds(KEY.encode()))
    assert main(["erase", "c-1", "--reason", "ticket 12", "--database-url", url]) == 0
    assert (
        "erased: experiment_units 0, assignments 0, exposures 0, decisions 0, events 1, customers 1"
        in capsys.readouterr().out
    )
    assert main(["erase", "c-1", "--database-url", url]) == 0
    assert capsys.readouterr().out.strip() == "nothing left to erase for this customer"
    assert main(["audit", "--database-url", url, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and '"reason": "ticket 12"' in lines[0] and '"principal": "cli:' in lines[0]
    assert "c-1" not in "".join(lines)


def test_erase_without_the_servers_key_says_so(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _events(url, "c-2", CustomerIds(KEY.encode()))
    assert main(["erase", "c-2", "--database-url", url]) == 2
    assert "holds hashed customer ids: set NEXTBEST_CUSTOMER_ID_KEY" in capsys.readouterr().err
    monkeypatch.setenv("NEXTBEST_CUSTOMER_ID_KEY", KEY)
    assert main(["erase", "c-2", "--database-url", url]) == 0
    assert "customers 1" in capsys.readouterr().out


def test_retention_deletes_by_age_and_is_audited(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _events(url, "old", days_ago=500)
    _events(url, "new", days_ago=0)
    # Relative to now: the "new" event (T0, 2026-11-20) must be younger than the cut-off too.
    assert main(["retention", "--older-than", "400d", "--batch", "1", "--database-url", url]) == 0
    assert ", events 1" in capsys.readouterr().out
    (entry,) = AuditLog(Database(url)).read()
    assert entry.action == "retention" and entry.detail["rows"]["events"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["retention", "--older-than", "400"], "expected a positive age such as 400d"),
        (["retention", "--older-than", "0d"], "expected a positive age"),
        (["retention", "--older-than", "4d", "--batch", "0"], "--batch must be at least 1"),
        (["erase", ""], "user_id: required"),
        (["erase", "u", "--reason", "x" * 513], "reason: at most 512 characters"),
        (["audit", "--since", "yesterday"], "--since: expected an ISO time"),
        (["audit", "--limit", "0"], "--limit must be at least 1"),
    ],
    ids=["no-unit", "zero", "batch", "empty-user", "long-reason", "since", "limit"],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arguments are checked before the database is opened: none is needed here.
    assert main([*argv, "--database-url", f"sqlite:///{tmp_path}/unused.db"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_an_unmigrated_database_is_refused_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["erase", "u", "--database-url", f"sqlite:///{tmp_path}/empty.db"]) == 2
    assert "run `nextbest migrate` first" in capsys.readouterr().err


def test_a_short_key_is_refused_naming_the_setting(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXTBEST_CUSTOMER_ID_KEY", "short")
    with pytest.raises(SystemExit) as caught:
        main(["erase", "u", "--database-url", url])
    assert "NEXTBEST_CUSTOMER_ID_KEY" in str(caught.value) and "short" not in str(caught.value)


@pytest.mark.parametrize(("text", "days"), [("400d", 400), ("2w", 14), (" 36h ", 1.5)], ids=["d", "w", "h"])
def test_ages(text: str, days: float) -> None:
    assert parse_age(text) == timedelta(days=days)
