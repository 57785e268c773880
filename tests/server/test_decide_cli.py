"""``nextbest decide`` against a real server: JSON lines in, one answer per line out, in NextActionBatch
calls; a bad line fails alone, a second run replays, and input errors are one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nextbest.cli import main
from nextbest.client import NextbestClient, make_event
from nextbest.server import NextbestServer
from nextbest.store.schema import decisions
from tests.conftest import uid
from tests.server.test_batch import at
from tests.server.test_decision_service import count


def _lines(path: Path, requests: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:  # type: ignore[type-arg]
    code = main(["decide", *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_decide_sends_batches_and_prints_each_answer_in_order(
    client: NextbestClient, server: NextbestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = [uid() for _ in range(5)]
    client.record_events([make_event("subscribed", u, at(0), channel="email") for u in users])
    requests = [
        {
            "request_id": uid("req"),
            "user_id": u,
            "trigger": "cart_abandoned",
            "occurred_at": "2026-11-02T11:00:00Z",
            "context": {"cart_value": 80.0},
        }
        for u in users
    ]
    requests[3]["trigger"] = "teleported"
    source = _lines(tmp_path / "requests.jsonl", requests)
    code, answers, err = _run(capsys, str(source), "--target", server.address, "--batch-size", "2")
    assert code == 2
    assert "1 of 5 requests invalid (index 3)" in err
    assert [a["index"] for a in answers] == [0, 1, 2, 3, 4]
    assert [a["request_id"] for a in answers] == [r["request_id"] for r in requests]
    for i in (0, 1, 2, 4):
        assert answers[i]["response"]["actions"][0]["action_id"] == "cart_reminder_email"
        assert count(server, decisions, request_id=requests[i]["request_id"]) == 1
    assert answers[3]["error"]["code"] == "INVALID_ARGUMENT"
    assert [f["field"] for f in answers[3]["error"]["fields"]] == ["trigger"]
    # The same file again: every decision is replayed, none made twice.
    code, again, _ = _run(capsys, str(source), "--target", server.address)
    assert code == 2
    assert all(again[i]["response"]["replayed"] for i in (0, 1, 2, 4))
    decided = [a["response"]["decision_id"] for a in answers if "response" in a]
    assert [a["response"]["decision_id"] for a in again if "response" in a] == decided


def test_decide_reads_standard_input_and_exits_0_when_all_are_answered(
    server: NextbestServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    line = json.dumps({"request_id": uid("req"), "user_id": uid(), "trigger": "order_placed"})
    monkeypatch.setattr("sys.stdin", io.StringIO(line + "\n\n"))
    code, answers, err = _run(capsys, "--target", server.address)
    assert (code, err) == (0, "")
    assert answers[0]["response"]["actions"][0]["action_id"] == "order_confirmation_email"


@pytest.mark.parametrize(
    ("content", "argv", "message"),
    [
        ('{"user_id": "u"}\nnot json\n', [], "line 2:"),
        ('{"user_id": "u", "no_such_field": 1}\n', [], 'line 1: Message type "nextbest.api.v1'),
        ("{}\n", ["--batch-size", "501"], "--batch-size must be between 1 and 500, got 501"),
        ("{}\n", ["--attempts", "0"], "--attempts must be between 1 and 10"),
    ],
)
def test_decide_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, argv: list[str], message: str
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(content)
    code = main(["decide", str(source), "--target", "127.0.0.1:1", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("nextbest decide: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_decide_names_a_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["decide", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.slow
def test_decide_without_a_server_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _lines(tmp_path / "in.jsonl", [{"request_id": "r", "user_id": "u", "trigger": "order_placed"}])
    code = main(["decide", str(source), "--target", "127.0.0.1:1", "--timeout", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("nextbest decide: 127.0.0.1:1 answered UNAVAILABLE")
    assert len(err.strip().splitlines()) == 1


def test_decide_sends_an_item_again_when_its_error_says_nothing_was_written(
    server: NextbestServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nextbest.errors import StoreUnavailableError

    engine = server.engine
    decide_batch = engine.decide_batch
    calls: list[int] = []

    def flaky(requests: Any, deadline: float | None = None) -> Any:
        calls.append(len(requests))
        results = decide_batch(requests, deadline)
        if len(calls) == 1:  # the first call: the second item's write "failed", nothing stored for it
            results[1] = StoreUnavailableError("the database did not answer; nothing was written")
        return results

    monkeypatch.setattr(engine, "decide_batch", flaky)
    requests = [{"request_id": uid("req"), "user_id": uid(), "trigger": "order_placed"} for _ in range(3)]
    source = _lines(tmp_path / "in.jsonl", requests)
    code, answers, err = _run(capsys, str(source), "--target", server.address)
    assert (code, err) == (0, "")
    assert calls == [3, 1]  # only the failed item was sent again
    assert all("response" in a for a in answers)
    assert [a["request_id"] for a in answers] == [r["request_id"] for r in requests]
