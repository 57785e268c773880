"""``make models`` (``nextbest.simulate.bundle``): training again on the store a run simulated gives the
same models, so does simulating in more processes, and a store that is not there is refused by name."""

from __future__ import annotations

import shlex
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from nextbest.models.artifacts import ModelKind, promoted_version, read_card
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


def test_make_models_trains_every_bundled_model_with_the_command_its_card_records() -> None:
    """``make models`` reproduces the bundle: its recipe's runs of this command train every model kind,
    and each bundled model's card records one of those runs (defaults spelled out), so a model trained
    some other way (another store, an argument since removed) cannot pass for ``make models``'s."""
    root = Path(__file__).resolve().parents[2]
    recipe = root.joinpath("Makefile").read_text().split("\nmodels:", 1)[1].split("\n\n", 1)[0]
    runs = [
        shlex.split(line.split("-m nextbest.simulate.bundle", 1)[1])
        for line in recipe.replace("\\\n", " ").splitlines()
        if "-m nextbest.simulate.bundle" in line
    ]
    assert len(runs) >= 2
    parsed = [bundle.argument_parser().parse_args(run) for run in runs]
    assert all(args.models_dir == "models" and not args.reuse_database for args in parsed)
    assert sorted({kind for args in parsed for kind in bundle.kinds_of(args)}) == sorted(ModelKind)
    commands = {kind: bundle.command(args) for args in parsed for kind in bundle.kinds_of(args)}
    for kind in ModelKind:
        version = promoted_version(root / "models", kind)
        assert version is not None, kind
        assert read_card(root / "models" / kind.value / version).command == commands[kind], kind
