"""``make models`` (``nextbest.simulate.bundle``): training again on the store a run simulated gives the
same models, so does simulating in more processes, and a store that is not there is refused by name."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from nextbest.models.artifacts import ModelKind, promoted_version
from nextbest.simulate import bundle

pytestmark = pytest.mark.slow  # a small simulated store and a LightGBM fit


def test_training_again_on_the_simulated_store_gives_the_same_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "sim.db"
    args = ["--customers", "600", "--days", "14", "--kinds", "propensity", "--database", str(database)]
    assert bundle.main([*args, "--models-dir", str(tmp_path / "first")]) == 0
    assert "simulated 600 customers x 14 days" in capsys.readouterr().out
    assert bundle.main([*args, "--models-dir", str(tmp_path / "again"), "--reuse-database"]) == 0
    assert f"training on the store already simulated in {database}" in capsys.readouterr().out
    first = promoted_version(tmp_path / "first", ModelKind.PROPENSITY)
    assert first is not None and first == promoted_version(tmp_path / "again", ModelKind.PROPENSITY)


def test_the_store_is_the_same_whatever_the_number_of_processes(tmp_path: Path) -> None:
    """Customers are independent, so splitting them between processes changes only the rows' ids and
    order: the same requests, decisions, exposures and events, and the same models."""
    args = ["--customers", "600", "--days", "14", "--kinds", "propensity"]
    contents = []
    for processes in (1, 2):
        database = tmp_path / f"sim{processes}.db"
        models = tmp_path / f"models{processes}"
        assert (
            bundle.main(
                [
                    *args,
                    "--processes",
                    str(processes),
                    "--database",
                    str(database),
                    "--models-dir",
                    str(models),
                ]
            )
            == 0
        )
        with closing(sqlite3.connect(database)) as conn:
            contents.append(
                (
                    conn.execute(
                        "SELECT request_id, trigger, occurred_at FROM decisions ORDER BY 1"
                    ).fetchall(),
                    conn.execute(
                        "SELECT d.request_id, e.action_id, e.send_at, e.score, e.features FROM exposures e "
                        "JOIN decisions d USING (decision_id) ORDER BY 1, 2"
                    ).fetchall(),
                    conn.execute("SELECT event_id, type, occurred_at FROM events ORDER BY 1").fetchall(),
                )
            )
        contents[-1] += (promoted_version(models, ModelKind.PROPENSITY),)
    assert contents[0][0] and contents[0][1] and contents[0][2]
    assert contents[0] == contents[1]


def test_reusing_a_store_that_is_not_there_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.db"
    with pytest.raises(SystemExit):
        bundle.main(["--reuse-database", "--database", str(missing), "--models-dir", str(tmp_path / "m")])
    assert f"--reuse-database: {missing} does not exist" in capsys.readouterr().err
