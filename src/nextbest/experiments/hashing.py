"""Hashing and bucketing compatible with GrowthBook's SDKs (spec 0.8), so a customer bucketed by nextbest
and by a GrowthBook SDK on the web lands in the same arm. Locked by GrowthBook's own test vectors
(``tests/experiments/growthbook-cases.json``).

Reference: GrowthBook JS SDK ``util.ts`` (``hash``, ``getBucketRanges``, ``chooseVariation``,
``inNamespace``, ``getEqualWeights``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "Range",
    "choose_variation",
    "fnv1a32",
    "get_bucket_ranges",
    "get_equal_weights",
    "hash_unit",
    "in_namespace",
]

Range = tuple[float, float]

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a over the string's UTF-16 code units, as JavaScript's ``charCodeAt`` sees them."""
    h = _FNV_OFFSET
    if text.isascii():
        units: Sequence[int] = text.encode("ascii")
    else:
        units = memoryview(text.encode("utf-16-le")).cast("H")
    for unit in units:
        h = ((h ^ unit) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def hash_unit(seed: str, value: str, version: int) -> float | None:
    """A number in [0, 1) for ``value`` under ``seed``; None for an unknown hash version.

    Version 1: ``fnv(value + seed) % 1000 / 1000``. Version 2 (better distributed, the default for new
    experiments): ``fnv(str(fnv(seed + value))) % 10000 / 10000``.
    """
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def in_namespace(unit: str, namespace: tuple[str, float, float]) -> bool:
    """Whether ``unit`` falls in the namespace's ``[start, end)`` slice (version-1 hash, seed ``__name``)."""
    name, start, end = namespace
    n = hash_unit("__" + name, unit, 1)
    return n is not None and start <= n < end


def get_equal_weights(n: int) -> list[float]:
    return [1.0 / n] * n if n > 0 else []


def get_bucket_ranges(n: int, coverage: float = 1.0, weights: Sequence[float] | None = None) -> list[Range]:
    """One ``[start, end)`` range per arm. Coverage is clamped to [0, 1]; weights that are missing, of the
    wrong length or do not sum to 1 (within 0.01) fall back to equal weights, as GrowthBook does."""
    coverage = min(max(coverage, 0.0), 1.0)
    if weights is None or len(weights) != n or not 0.99 <= sum(weights) <= 1.01:
        weights = get_equal_weights(n)
    cumulative = 0.0
    ranges: list[Range] = []
    for weight in weights:
        start = cumulative
        cumulative += weight
        ranges.append((start, start + coverage * weight))
    return ranges


def choose_variation(n: float, ranges: Sequence[Range]) -> int:
    """The arm whose range holds ``n``; -1 when none does (the unit is outside the coverage)."""
    for index, (start, end) in enumerate(ranges):
        if start <= n < end:
            return index
    return -1
