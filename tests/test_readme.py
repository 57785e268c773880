"""The README's "Call" examples run as written, in order, against a fresh server, with the outputs it shows.

The section is read from README.md itself, so an example that drifts from the product fails here:
the grpcurl calls (sent with the same JSON through ``json_format``, as grpcurl would; grpcurl is not
installed here), the Python snippets (run as written, with the address swapped for the test server's)
and the ``nextbest decide`` shell example (run by bash with the venv on PATH). Shown outputs are compared
as written: a shown JSON object must be contained in the answer (floats to the digits shown; ``...``
stands for what the README leaves out), a shown text block line by line (``...`` matching anything).
Only the decision id differs on every run, as the README says.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.server.process import server_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_ADDRESS = "127.0.0.1:50051"


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _blocks(section: str) -> list[tuple[str, str]]:
    """The fenced blocks of ``section`` in order, as (language, body)."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", section, re.S)]


def _call_examples() -> list[tuple[str, str]]:
    return _blocks(_section(README.read_text(), "Call"))


def _loose_json(shown: str) -> Any:
    """The README's JSON with its ``...`` elisions removed."""
    return json.loads(re.sub(r",\s*\.\.\.(?=\s*[}\]])", "", shown))


def _contains(actual: Any, shown: Any, path: str = "$") -> list[str]:
    """Where ``actual`` differs from what ``shown`` states (a shown float to its shown digits)."""
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        errors = []
        for key, value in shown.items():
            if key not in actual:
                errors.append(f"{path}.{key}: missing (the answer has {sorted(actual)})")
            else:
                errors += _contains(actual[key], value, f"{path}.{key}")
        return errors
    if isinstance(shown, list):
        if not isinstance(actual, list) or len(actual) != len(shown):
            return [f"{path}: expected {len(shown)} items, got {actual!r}"]
        pairs = enumerate(zip(actual, shown, strict=True))
        return [e for i, (a, s) in pairs for e in _contains(a, s, f"{path}[{i}]")]
    if isinstance(shown, float) and isinstance(actual, (int, float)):
        digits = len(repr(shown).split(".")[1]) if "." in repr(shown) else 0
        return [] if round(actual, digits) == shown else [f"{path}: {actual!r} shown as {shown!r}"]
    return [] if actual == shown else [f"{path}: {actual!r} shown as {shown!r}"]


def _lines_match(actual: str, shown: str) -> list[str]:
    got = actual.strip().splitlines()
    want: list[str] = []
    for line in shown.strip().splitlines():  # a line the README wraps goes on indented
        if line.startswith(" ") and want:
            want[-1] += line
        else:
            want.append(line)
    if len(got) != len(want):
        return [f"{len(got)} lines printed, {len(want)} shown:\n{actual}"]
    errors = []
    for g, w in zip(got, want, strict=True):
        pattern = ".*".join(re.escape(part) for part in w.strip().split("..."))
        if not re.fullmatch(pattern, g.strip()):
            errors.append(f"printed {g!r}\n  shown {w!r}")
    return errors


def _grpcurl(stub: Any, command: str) -> dict[str, Any]:
    """What ``grpcurl -plaintext -d '<json>' ADDRESS nextbest.api.v1.DecisionService/<Method>`` sends."""
    match = re.search(r"-d '(.*?)'.*DecisionService/(\w+)", command, re.S)
    assert match, f"not a grpcurl call of DecisionService: {command}"
    body, method = match.groups()
    request_type = {"NextAction": pb.NextActionRequest, "RecordEvents": pb.RecordEventsRequest}[method]
    request = json_format.Parse(body, request_type())
    reply = getattr(stub, method)(request, timeout=30)
    answer: dict[str, Any] = json_format.MessageToDict(reply)
    return answer


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("readme")
    args = ["--database-url", f"sqlite:///{folder / 'readme.db'}"]  # the bundled catalog and models
    with server_process(args, folder / "server.log") as address:
        yield address


def test_the_call_section_runs_as_written_in_order(address: str, tmp_path: Path) -> None:
    blocks = _call_examples()
    assert len(blocks) >= 6, "the Call section lost its examples"
    errors: list[str] = []
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.DecisionServiceStub(channel)
    last_answer: dict[str, Any] | None = None
    last_printed: str | None = None
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ran = 0
    for language, body in blocks:
        code = body.replace(README_ADDRESS, address)
        if language == "sh" and "grpcurl" in code:
            for command in re.split(r"\n(?=grpcurl )", code.strip()):
                last_answer = _grpcurl(stub, command)
            last_printed = None
            ran += 1
        elif language == "json":
            assert last_answer is not None, "a JSON answer shown before any call"
            shown = _loose_json(body)
            shown.pop("decisionId", None)  # differs on every run, as the README says
            errors += [f"grpcurl answer {e}" for e in _contains(last_answer, shown)]
        elif language == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
            last_printed = out.getvalue()
            for printed, comment in re.findall(r"print\((.*)\)\s*#\s*(\[.*?\])", code):
                # a result shown as a comment beside its print: its first words must be what it printed
                if not last_printed.startswith(comment):
                    errors.append(f"python {printed} printed {last_printed!r}, shown {comment}")
            ran += 1
        elif language == "sh":
            run = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                check=False,  # nextbest decide exits 2 here: one request of two is invalid, as shown
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            last_printed = run.stdout + run.stderr
            ran += 1
        elif language == "":
            assert last_printed is not None, "an output shown before anything printed it"
            errors += _lines_match(last_printed, body)
    channel.close()
    assert ran >= 4
    assert not errors, "README Call section drifted:\n" + "\n".join(errors)
