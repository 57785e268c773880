"""Scoring a LightGBM model: LightGBM itself, or its trees compiled to machine code.

A decision scores a handful of rows; LightGBM's cost there is its per-call bookkeeping, not the trees
(benchmarks/bench_scoring.py). So each model is compiled once (Treelite and TL2cgen write it as C, the
system's C compiler builds it, see ``nextbest.models.codegen``) and its library is cached on disk under
the digest of the model's text, so a restart or a reload loads it in milliseconds. Nothing is compiled
on the request path and nothing waits for a compilation: a model scores with LightGBM until its library
is built (in a child process at low priority) and has passed the parity check, then switches.

The parity check compares the library with LightGBM's own prediction (raw score and probability) on
rows that visit every split threshold of the model from both sides, with missing values, zeros,
infinities and categories inside and outside the model's sets; a difference over ``TOLERANCE`` keeps
LightGBM. When compilation is unavailable (no C compiler, TL2cgen not installed) or fails, LightGBM
scores, and the reason is logged once.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import math
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from nextbest.models.codegen import ENTRY, find_compiler
from nextbest.models.lightgbm_serving import import_lightgbm

if TYPE_CHECKING:
    import lightgbm as lgb
    import lightgbm.basic as _lgb
else:  # without scikit-learn and pandas, which serving does not use (see lightgbm_serving)
    lgb = import_lightgbm()
    _lgb = lgb.basic

__all__ = [
    "TOLERANCE",
    "CompiledForest",
    "Forest",
    "ForestCompiler",
    "LightGBMForest",
    "Scorable",
    "parity",
    "probe_rows",
]

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9
# Rows of the parity check: a library just compiled is checked thoroughly; one from the cache (which
# holds only libraries that passed) is checked again, lighter, as it goes into service at start.
CHECK_ROWS = 4096
CACHED_CHECK_ROWS = 256
# Bumped whenever the generated code or its entry point changes, so old libraries are not reused.
_CODEGEN_VERSION = "1"
# The child that compiles one model: ``-c`` rather than ``-m`` (the package imports the module already),
# ``-P`` so that the server's working directory is not on its path.
_COMPILE = "import sys; from nextbest.models.codegen import main; sys.exit(main(sys.argv[1:]))"
_CHAR = ctypes.c_char
_ONE_THREAD = _lgb._c_str("num_threads=1")


def _address(a: npt.NDArray[np.float64]) -> int:
    """The address of a C-contiguous array's data, from a ctypes view of its buffer: ~0.2 µs, where
    ``a.ctypes.data`` builds numpy's ctypes helper (~1 µs, twice per scored decision). A read-only or
    empty array (no writable byte to view) goes numpy's way."""
    try:
        return ctypes.addressof(_CHAR.from_buffer(a))  # type: ignore[arg-type]  # numpy 1.x: no Buffer in its stubs
    except (TypeError, ValueError, BufferError):
        return int(a.ctypes.data)


class Forest(Protocol):
    """Scores rows of a model's features (float64, in the model's feature order, NaN for missing)."""

    def predict(self, x: npt.NDArray[np.float64], raw: bool = False) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class LightGBMForest:
    """LightGBM's own prediction, with one thread (its OpenMP threads turn a 100 µs call into
    milliseconds whenever another process is busy): the C function ``Booster.predict`` ends in for a
    float64 matrix, called directly, as the Python wrapper around it costs a third of a 20-row call."""

    booster: lgb.Booster

    def predict(self, x: npt.NDArray[np.float64], raw: bool = False) -> npt.NDArray[np.float64]:
        x = np.ascontiguousarray(x, dtype=np.float64)
        rows, columns = x.shape
        out = np.empty(rows, dtype=np.float64)
        written = ctypes.c_int64(0)
        _lgb._safe_call(
            _lgb._LIB.LGBM_BoosterPredictForMat(  # type: ignore[attr-defined]
                self.booster._handle,
                ctypes.c_void_p(_address(x)),
                ctypes.c_int(_lgb._C_API_DTYPE_FLOAT64),
                ctypes.c_int32(rows),
                ctypes.c_int32(columns),
                ctypes.c_int(1),  # row-major
                ctypes.c_int(_lgb._C_API_PREDICT_RAW_SCORE if raw else _lgb._C_API_PREDICT_NORMAL),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # every iteration
                _ONE_THREAD,
                ctypes.byref(written),
                ctypes.c_void_p(_address(out)),
            )
        )
        if written.value != rows:  # pragma: no cover - LightGBM writes one value per row
            raise RuntimeError(f"LightGBM wrote {written.value} predictions for {rows} rows")
        return out


class CompiledForest:
    """A model's trees compiled to a shared library by ``nextbest.models.codegen``.

    Loaded with ``ctypes.PyDLL``, which keeps the GIL during the call: a call is microseconds, and
    releasing and taking back the GIL around it would cost more than it frees under the server's
    threads."""

    def __init__(self, path: Path, num_feature: int) -> None:
        self.path = path
        self._lib = ctypes.PyDLL(str(path))
        count = self._lib.nextbest_num_feature
        count.argtypes, count.restype = [], ctypes.c_int32
        if count() != num_feature:
            raise ValueError(f"{path.name} takes {count()} features, the model {num_feature}")
        self.num_feature = num_feature
        fn = getattr(self._lib, ENTRY)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p]
        fn.restype = None
        self._fn = fn

    def predict(self, x: npt.NDArray[np.float64], raw: bool = False) -> npt.NDArray[np.float64]:
        if x.dtype != np.float64 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float64)
        rows, columns = x.shape
        if columns != self.num_feature:
            raise ValueError(f"{columns} features given, the model takes {self.num_feature}")
        out = np.empty(rows, dtype=np.float64)
        self._fn(_address(x), rows, 1 if raw else 0, _address(out))
        return out


class Scorable(Protocol):
    """A model whose forest the compiler replaces once its library is ready and checked."""

    @property
    def reference(self) -> LightGBMForest: ...

    @property
    def num_feature(self) -> int: ...

    def use(self, forest: Forest) -> None: ...


def probe_rows(model_text: str, num_feature: int, rows: int = 1024, seed: int = 0) -> npt.NDArray[np.float64]:
    """Rows that put every split of the model to the test: each numerical feature takes its thresholds,
    the doubles just below and above them, zeros of both signs, tiny values, infinities and NaN; each
    categorical feature takes integer codes from -1 past the largest it splits on, and NaN."""
    thresholds: list[set[float]] = [set() for _ in range(num_feature)]
    categorical = [False] * num_feature
    split_feature: list[int] = []
    for line in model_text.splitlines():
        if line.startswith("split_feature="):
            split_feature = [int(v) for v in line.split("=", 1)[1].split()]
        elif line.startswith("decision_type="):
            for f, kind in zip(split_feature, line.split("=", 1)[1].split(), strict=False):
                categorical[f] = categorical[f] or bool(int(kind) & 1)
        elif line.startswith("threshold="):
            for f, value in zip(split_feature, line.split("=", 1)[1].split(), strict=False):
                thresholds[f].add(float(value))
    rng = np.random.default_rng(seed)
    special = [0.0, -0.0, 1e-36, -1e-36, math.inf, -math.inf, math.nan, 1.0, -1.0]
    x = np.empty((rows, num_feature), dtype=np.float64)
    for f in range(num_feature):
        if categorical[f]:
            # A categorical split's "threshold" indexes its category set; the codes are small integers.
            top = int(max(thresholds[f], default=0)) + 64
            values = np.array([math.nan, *range(-1, top)], dtype=np.float64)
        else:
            cuts = np.array(sorted(thresholds[f]), dtype=np.float64)
            values = np.concatenate(
                [cuts, np.nextafter(cuts, -math.inf), np.nextafter(cuts, math.inf), special]
            )
        x[:, f] = rng.choice(values, size=rows)
    return x


def parity(forest: Forest, reference: Forest, x: npt.NDArray[np.float64]) -> float:
    """The largest difference between two forests' raw scores and probabilities on ``x`` (NaN counts as
    an infinite difference unless both are NaN)."""
    worst = 0.0
    for raw in (True, False):
        a, b = forest.predict(x, raw=raw), reference.predict(x, raw=raw)
        if a.shape != b.shape:
            return math.inf
        same_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(same_nan, 0.0, np.abs(a - b))
        worst = max(worst, float(np.max(diff, initial=0.0)) if not np.isnan(diff).any() else math.inf)
    return worst


@dataclass
class _Job:
    key: str
    text: bytes
    targets: list[Scorable] = field(default_factory=list)


class ForestCompiler:
    """Compiles models in the background and hands each its library once checked.

    ``attach`` never blocks on a compilation: a library in the cache is loaded and checked at once
    (milliseconds); otherwise the model is queued for one worker thread that runs the compiler in a child
    process, one model at a time, so a server on two cores keeps serving meanwhile.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        timeout: float = 600.0,
        probe: Callable[[], str | None] | None = None,
        command: Sequence[str] = (sys.executable, "-P", "-c", _COMPILE),
    ) -> None:
        """``probe`` says why nothing can be compiled here (None: it can); ``command``, followed by the
        model file and the library to write, compiles one model (both replaceable for tests)."""
        self.cache_dir = cache_dir
        self.timeout = timeout
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._logged: set[str] = set()
        self.command = tuple(command)
        self._unavailable = (probe or _unavailable)()
        self._tag = _tag() if self._unavailable is None else ""
        self.compiled: dict[str, float] = {}  # key -> seconds the compilation took, for the benchmark

    @property
    def unavailable(self) -> str | None:
        """Why nothing can be compiled here, or None."""
        return self._unavailable

    def key(self, text: bytes) -> str:
        return hashlib.sha256(text + b"\0" + self._tag.encode()).hexdigest()[:32]

    def library(self, text: bytes) -> Path:
        return self.cache_dir / f"forest-{self.key(text)}.so"

    def attach(self, model: Scorable, text: bytes) -> bool:
        """Gives ``model`` its compiled forest now if the cache has it, else when compiled; returns
        whether it is compiled now."""
        if self._unavailable is not None:
            self._once(
                "unavailable",
                "compiled scoring unavailable (%s): models score with LightGBM",
                self._unavailable,
            )
            return False
        key = self.key(text)
        path = self.library(text)
        if path.is_file() and self._adopt(model, path, text, key, CACHED_CHECK_ROWS):
            return True
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                job.targets.append(model)
                return False
            if key in self._logged:  # failed before: LightGBM, without trying again
                return False
            job = self._jobs[key] = _Job(key, text, [model])
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="nextbest-compile", daemon=True)
                self._worker.start()
        self._queue.put(job)
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until no compilation is queued or running; returns False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._jobs:
                    return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._compile(job)
            except Exception:  # pragma: no cover - a compilation never takes the worker down
                logger.exception("compiling a model failed unexpectedly; it scores with LightGBM")
            finally:
                with self._lock:
                    self._jobs.pop(job.key, None)

    def _compile(self, job: _Job) -> None:
        path = self.cache_dir / f"forest-{job.key}.so"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Server processes sharing a cache compile each model once between them.
        with open(self.cache_dir / f".forest-{job.key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.is_file():
                started = time.monotonic()
                source = self.cache_dir / f".forest-{job.key}.{os.getpid()}.txt"
                source.write_bytes(job.text)
                try:
                    done = subprocess.run(
                        [*self.command, str(source), str(path)],
                        capture_output=True,
                        text=True,
                        timeout=self.timeout,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    self._once(
                        job.key,
                        "compiling model %s took over %.0f s; it scores with LightGBM",
                        job.key[:12],
                        self.timeout,
                    )
                    return
                finally:
                    source.unlink(missing_ok=True)
                if done.returncode != 0:
                    reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
                    self._once(
                        job.key,
                        "compiling model %s failed (%s); it scores with LightGBM",
                        job.key[:12],
                        reason,
                    )
                    return
                self.compiled[job.key] = time.monotonic() - started
                logger.info("compiled model %s in %.1f s", job.key[:12], self.compiled[job.key])
        with self._lock:
            targets = list(job.targets)
        for model in targets:
            self._adopt(model, path, job.text, job.key, CHECK_ROWS)

    def _adopt(self, model: Scorable, path: Path, text: bytes, key: str, rows: int) -> bool:
        try:
            forest = CompiledForest(path, model.num_feature)
        except (OSError, AttributeError, ValueError) as exc:
            path.unlink(missing_ok=True)  # built again at the next start
            self._once(key, "compiled model %s does not load (%s); it scores with LightGBM", key[:12], exc)
            return False
        worst = parity(forest, model.reference, probe_rows(text.decode(), model.num_feature, rows))
        if not worst <= TOLERANCE:
            path.unlink(missing_ok=True)
            self._once(
                key,
                "compiled model %s differs from LightGBM by %.3g; it scores with LightGBM",
                key[:12],
                worst,
            )
            return False
        model.use(forest)
        return True

    def _once(self, key: str, message: str, *args: object) -> None:
        with self._lock:
            if key in self._logged:
                return
            self._logged.add(key)
        logger.warning(message, *args)


def _unavailable() -> str | None:
    if importlib.util.find_spec("tl2cgen") is None or importlib.util.find_spec("treelite") is None:
        return "tl2cgen and treelite are not installed"
    if find_compiler() is None:
        return "no C compiler on PATH"
    return None


def _tag() -> str:
    """What a library depends on besides the model: the code generator's version and the machine."""
    versions = [importlib.metadata.version(p) for p in ("tl2cgen", "treelite")]
    return f"{_CODEGEN_VERSION}-{'-'.join(versions)}-{platform.machine()}-{sys.platform}"
