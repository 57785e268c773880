"""The command line: clear messages that say what to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nextbest.cli import main


def test_check_accepts_the_bundled_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "cart_abandoned" in out


def test_check_prints_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nchannels: {email: {}}\nflows: {f: {}}\n"
        "actions:\n  - {id: a, flow: g, channel: sms, class: triggered, triggers: [t], rule: 'x >'}\n"
    )
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: actions[0].flow: unknown flow 'g'" in err
    assert "actions[0].channel: unknown channel 'sms'" in err
    assert "actions[0].rule: CEL syntax error" in err
    assert "flows.f: flow has no actions" in err
    assert "4 catalog problem(s)" in err


def test_bad_settings_name_the_flag_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "70000"])
    assert "--port (NEXTBEST_PORT)" in str(info.value.code)


def test_bad_database_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--database-url", "mysql://nowhere/db"]) == 2
    assert "unsupported database 'mysql'" in capsys.readouterr().err


def test_environment_variables_configure_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nextbest.settings import Settings

    monkeypatch.setenv("NEXTBEST_PORT", "6000")
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    settings = Settings()
    assert settings.port == 6000 and settings.database_url.endswith("x.db")
    assert Settings(port=7000).port == 7000  # arguments win over the environment


@pytest.mark.slow
def test_migrate_then_demo_run_end_to_end(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    done = subprocess.run(
        [sys.executable, "-m", "nextbest", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    from nextbest.store.migrate import head_revision

    assert f"schema at revision {head_revision()}" in done.stdout
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "nextbest",
            "demo",
            "--database-url",
            url,
            "--customers",
            "120",
            "--days",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        cwd=tmp_path,  # its var/ (truth, reports, server log) goes here
    )
    assert "EXITED_FLOW" in demo.stdout and "SUPPRESSED" in demo.stdout and "replayed=True" in demo.stdout
    assert "INVALID_ARGUMENT" in demo.stdout
    # then the whole loop: the lift reports beside the truth, and where the HTML went
    assert "true effect" in demo.stdout and "global_holdout" in demo.stdout
    assert "HTML report written to" in demo.stdout and list((tmp_path / "var").glob("demo-*-reports/*.html"))
    assert list((tmp_path / "var").glob("demo-*-truth.json"))


def test_assign_explains_the_arm(capsys: pytest.CaptureFixture[str]) -> None:
    from nextbest.catalog import bundled_catalog_path, load_catalog
    from nextbest.experiments import assign

    experiment = load_catalog(bundled_catalog_path()).experiment("global_holdout")
    assert experiment is not None
    expected = assign(experiment, "customer-42")
    assert main(["assign", "--experiment", "global_holdout", "--unit", "customer-42"]) == 0
    out = capsys.readouterr().out
    assert f"bucket       {expected.bucket:.4f}" in out
    assert f"arm          {expected.arm_id}" in out
    assert (
        main(
            [
                "assign",
                "--experiment",
                "global_holdout",
                "--unit",
                "customer-42",
                "--seed",
                "other",
                "--hash-version",
                "1",
            ]
        )
        == 0
    )
    assert "seed 'other', hash version 1" in capsys.readouterr().out
    assert main(["assign", "--experiment", "nope", "--unit", "u"]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err


def test_assign_says_a_channel_experiment_needs_every_arms_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nextbest.catalog import bundled_catalog_path

    data = yaml.safe_load(bundled_catalog_path().read_text())
    data["experiments"] = [
        {
            "id": "to_sms",
            "scope": {"actions": ["cart_reminder_email"]},
            "arms": [{"id": "email", "weight": 0.5}, {"id": "sms", "weight": 0.5, "channel": "sms"}],
        }
    ]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(data))
    assert main(["assign", "--catalog", str(catalog), "--experiment", "to_sms", "--unit", "u1"]) == 0
    assert "channels     arms send on sms: a unit is entered only when" in capsys.readouterr().out
    assert main(["assign", "--experiment", "global_holdout", "--unit", "u1"]) == 0
    assert "channels " not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--metric", "conversion", "--metric", "nps"],
            "nextbest report: --metric: unknown metric 'nps'; known: conversion, revenue, orders, visit, "
            "revenue_per_order",
        ),
        (["--window-days", "-3"], "nextbest report: --window-days: must be between 0 (meaning 14) and 365"),
        (["--window-days", "nan"], "nextbest report: --window-days: must be between 0 (meaning 14) and 365"),
        (["--alpha", "0.7"], "nextbest report: --alpha: must be in (0, 0.5), or 0 for 0.05"),
        (["--experiment", ""], "nextbest report: --experiment: required"),
    ],
)
def test_report_rejects_a_bad_request_with_what_to_fix(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same validation as GetLiftReport's, before the database is touched; no traceback."""
    database = tmp_path / "never-opened.db"
    args = ["report", "--experiment", "global_holdout", "--database-url", f"sqlite:///{database}", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [message]
    assert not database.exists()


def test_report_names_every_bad_flag_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["report", "--experiment", "x", "--metric", "nps", "--window-days", "400", "--alpha", "-1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert [line.split(":")[1].strip() for line in err.splitlines()] == [
        "--metric",
        "--window-days",
        "--alpha",
    ]
    assert "Traceback" not in err


def test_report_help_states_the_request_s_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from nextbest.reports import DEFAULT_METRICS
    from nextbest.reports.request import DEFAULT_ALPHA, DEFAULT_WINDOW

    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default: {', '.join(m.value for m in DEFAULT_METRICS)})" in text
    assert f"attribution window in days (default {DEFAULT_WINDOW.days})" in text
    assert f"(default {DEFAULT_ALPHA:g})" in text


def test_check_reports_rule_errors_beside_structural_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nbogus_key: 1\nchannels: {email: {requires_consent: true}}\n"
        "flows: {f: {priority: high, steps: [{after: 1h, actions: [a], when: 'journey.opened &&'}]}}\n"
        "actions:\n  - {id: a, flow: f, channel: email, class: triggered, triggers: [t], rule: 'x >'}\n"
    )
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: bogus_key: unknown key" in err
    assert "flows.f.priority:" in err
    assert f"{bad}:6: actions[0].rule: CEL syntax error" in err
    assert "flows.f.steps[0].when: CEL syntax error" in err


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    # `nextbest report ... | head`: the reader goes away mid-output; no traceback, exit 1.
    code = (
        "import sys\n"
        "from nextbest import cli\n"
        "def closed(args):\n"
        "    print('x' * 100)\n"
        "    raise BrokenPipeError\n"
        "cli._stats = closed\n"
        "raise SystemExit(cli.main(['stats']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr and done.stderr == ""
