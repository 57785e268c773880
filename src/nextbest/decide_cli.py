"""``nextbest decide``: send NextAction requests from a file (one JSON object per line) to a server in
``NextActionBatch`` calls, and print one JSON answer per request, in order.

Each item keeps its own ``request_id``, so running the same file again replays the stored decisions
instead of deciding twice. An item the server could not decide for a passing reason (UNAVAILABLE,
ABORTED, DEADLINE_EXCEEDED: nothing was written) is sent again, with the same request, a few times."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["add_decide_command", "read_requests", "run_decide"]

_EXAMPLE = '{"request_id": "r-1", "user_id": "customer-7", "trigger": "cart_abandoned"}'


def add_decide_command(sub: Any) -> argparse.ArgumentParser:
    decide: argparse.ArgumentParser = sub.add_parser(
        "decide",
        help="send NextAction requests (JSON lines) to a server in batches and print each answer",
        description="Each input line is a NextActionRequest in protobuf JSON, e.g. " + _EXAMPLE + ". "
        "Prints one JSON line per request, in order: its response or its error. Exit status: 0 when "
        "every request was answered, 2 when some were invalid, 1 when others failed.",
    )
    decide.add_argument("input", nargs="?", default="-", help="JSON lines file (default: standard input)")
    decide.add_argument("--target", default="127.0.0.1:50051", help="the server (default 127.0.0.1:50051)")
    decide.add_argument(
        "--batch-size", type=int, default=100, help="requests per NextActionBatch call, 1-500 (default 100)"
    )
    decide.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="tries per request when its error is passing: UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED "
        "(default 3)",
    )
    decide.add_argument("--timeout", type=float, default=30.0, help="seconds per batch call (default 30)")
    return decide


def read_requests(lines: Iterable[str]) -> list[Any]:
    """The requests of a JSON lines text, blank lines skipped; ``ValueError`` naming the first bad line."""
    from google.protobuf import json_format

    from nextbest.api.v1 import decision_service_pb2 as pb

    requests = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            requests.append(json_format.Parse(line, pb.NextActionRequest()))
        except json_format.ParseError as exc:
            reason = str(exc).splitlines()[0][:200]
            raise ValueError(
                f"line {number}: {reason}; each line is a NextActionRequest, e.g. {_EXAMPLE}"
            ) from None
    return requests


def run_decide(args: argparse.Namespace, settings: Callable[[argparse.Namespace], Any]) -> int:
    import grpc

    from nextbest.client import NextbestClient

    problems = []
    if not 1 <= args.batch_size <= 500:
        problems.append(f"--batch-size must be between 1 and 500, got {args.batch_size}")
    if not 1 <= args.attempts <= 10:
        problems.append(f"--attempts must be between 1 and 10, got {args.attempts}")
    if args.timeout <= 0:
        problems.append("--timeout must be positive")
    if problems:
        print(f"nextbest decide: {'; '.join(problems)}", file=sys.stderr)
        return 2
    try:
        requests = _read(args.input)
        client = NextbestClient.from_settings(args.target, settings(args), timeout=args.timeout)
    except ValueError as exc:
        print(f"nextbest decide: {exc}", file=sys.stderr)
        return 2
    invalid: list[int] = []
    failed = 0
    try:
        with client:
            for start in range(0, len(requests), args.batch_size):
                chunk = requests[start : start + args.batch_size]
                for offset, line in enumerate(_decide(client, chunk, args.attempts, args.timeout)):
                    line["index"] = start + offset
                    if "error" in line:
                        if line["error"]["code"] == "INVALID_ARGUMENT":
                            invalid.append(start + offset)
                        else:
                            failed += 1
                    print(json.dumps(line, sort_keys=True), flush=True)
    except grpc.RpcError as exc:
        code = exc.code().name
        details = "".join((exc.details() or "").splitlines()[:1])[:300]
        print(f"nextbest decide: {args.target} answered {code}: {details}", file=sys.stderr)
        return 1
    if invalid:
        shown = ", ".join(str(i) for i in invalid[:10]) + (" ..." if len(invalid) > 10 else "")
        print(
            f"nextbest decide: {len(invalid)} of {len(requests)} requests invalid (index {shown}); "
            "their errors name the fields",
            file=sys.stderr,
        )
        return 2
    if failed:
        print(
            f"nextbest decide: {failed} of {len(requests)} requests failed; see their errors", file=sys.stderr
        )
        return 1
    return 0


def _read(name: str) -> list[Any]:
    if name == "-":
        return read_requests(sys.stdin)
    try:
        with open(name, encoding="utf-8") as f:
            return read_requests(f)
    except OSError as exc:
        raise ValueError(f"cannot read {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text") from None


def _decide(client: Any, requests: Sequence[Any], attempts: int, timeout: float) -> list[dict[str, Any]]:
    """One JSON-ready answer per request, in order; items with a passing error are sent again."""
    from google.protobuf import json_format
    from google.rpc import code_pb2

    from nextbest.client import RETRYABLE, batch_errors

    answers: list[dict[str, Any] | None] = [None] * len(requests)
    pending = list(range(len(requests)))
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(0.1 * 2**attempt, 2.0))
        reply = client.next_action_batch([requests[i] for i in pending], timeout=timeout)
        retry = []
        for position, result in zip(pending, reply.results, strict=True):
            if result.HasField("response"):
                response = json_format.MessageToDict(result.response, preserving_proto_field_name=True)
                answers[position] = {"request_id": result.request_id, "response": response}
                continue
            error = result.error
            prefix = f"requests[{result.index}]."
            answers[position] = {
                "request_id": result.request_id,
                "error": {
                    "code": code_pb2.Code.Name(error.code),
                    "message": error.message,
                    "fields": [
                        {"field": field.removeprefix(prefix), "description": description}
                        for field, description in batch_errors(error)
                    ],
                },
            }
            if error.code in RETRYABLE:
                retry.append(position)
        pending = retry
        if not pending:
            break
    return [a for a in answers if a is not None]
