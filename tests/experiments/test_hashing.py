"""GrowthBook's conformance vectors, and the invariants assignment relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextbest.experiments.hashing import (
    choose_variation,
    fnv1a32,
    get_bucket_ranges,
    get_equal_weights,
    hash_unit,
    in_namespace,
)

CASES = json.loads((Path(__file__).parent / "growthbook-cases.json").read_text())


@pytest.mark.parametrize(("seed", "value", "version", "expected"), CASES["hash"], ids=repr)
def test_hash(seed: str, value: str, version: int, expected: float | None) -> None:
    assert hash_unit(seed, value, version) == expected


@pytest.mark.parametrize(
    ("name", "args", "expected"), CASES["getBucketRange"], ids=[c[0] for c in CASES["getBucketRange"]]
)
def test_get_bucket_range(name: str, args: list, expected: list[list[float]]) -> None:
    n, coverage, weights = args
    got = [bound for r in get_bucket_ranges(n, coverage, weights) for bound in r]
    assert got == pytest.approx([bound for r in expected for bound in r], abs=1e-12), name


@pytest.mark.parametrize(
    ("name", "n", "ranges", "expected"),
    CASES["chooseVariation"],
    ids=[c[0] for c in CASES["chooseVariation"]],
)
def test_choose_variation(name: str, n: float, ranges: list[list[float]], expected: int) -> None:
    assert choose_variation(n, [tuple(r) for r in ranges]) == expected


@pytest.mark.parametrize(
    ("name", "unit", "namespace", "expected"), CASES["inNamespace"], ids=[c[0] for c in CASES["inNamespace"]]
)
def test_in_namespace(name: str, unit: str, namespace: list, expected: bool) -> None:
    assert in_namespace(unit, tuple(namespace)) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "expected"), CASES["getEqualWeights"], ids=repr)
def test_get_equal_weights(n: int, expected: list[float]) -> None:
    assert [round(w, 8) for w in get_equal_weights(n)] == expected


def test_fnv_uses_utf16_code_units_like_javascript() -> None:
    # "𝄞" is one code point but two UTF-16 code units (0xD834, 0xDD1E).
    h = 0x811C9DC5
    for unit in (0xD834, 0xDD1E):
        h = ((h ^ unit) * 0x01000193) & 0xFFFFFFFF
    assert fnv1a32("𝄞") == h
    assert fnv1a32("é") == ((0x811C9DC5 ^ 0xE9) * 0x01000193) & 0xFFFFFFFF


@pytest.mark.slow
@given(st.text(max_size=40), st.text(max_size=40), st.sampled_from([1, 2]))
def test_bucket_is_in_unit_interval(seed: str, unit: str, version: int) -> None:
    n = hash_unit(seed, unit, version)
    assert n is not None and 0.0 <= n < 1.0


def test_same_unit_and_seed_get_the_same_bucket_in_another_process() -> None:
    units = [f"user-{i}" for i in range(200)] + ["ünïcødé", "𝄞-user", ""]
    here = [hash_unit("exp-seed", u, 2) for u in units]
    code = (
        "import json,sys; from nextbest.experiments.hashing import hash_unit; "
        "print(json.dumps([hash_unit('exp-seed', u, 2) for u in json.loads(sys.stdin.read())]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(units),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(out.stdout) == here
