"""Compiling a LightGBM model to a shared library: Treelite reads the model, TL2cgen writes it as C, the
system's C compiler builds it. ``nextbest.models.compiled`` runs ``main`` in a child process, so that
neither the import of Treelite nor the compilation holds the serving process's GIL, then loads the
library with ctypes and checks it against LightGBM.

Two changes to TL2cgen's output, both checked by that comparison:

- TL2cgen marks a missing value by an ``int`` of -1 in the low half of the 8-byte slot and reads the value
  only when that int is not -1, so a present double whose low 32 bits are all ones would be taken as
  missing. nextbest's missing values are NaN, so the test becomes ``isnan`` on the double itself, and
  the model's input is the float64 matrix as it is, with no copy into TL2cgen's entry type.
- One exported function scores a whole row-major matrix (``nextbest_predict``), so a batch is one
  foreign call.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["ENTRY", "build", "find_compiler"]

ENTRY = "nextbest_predict"
_MISSING = re.compile(r"data\[(\d+)\]\.missing != -1")
_WRAPPER = f"""\
#include "header.h"

int32_t nextbest_num_feature(void) {{ return get_num_feature(); }}

/* Scores ``rows`` rows of a row-major float64 matrix; ``raw`` nonzero: the sum of the trees, without
   the objective's transformation. */
void {ENTRY}(const double* x, int32_t rows, int32_t raw, double* out) {{
  const int32_t columns = get_num_feature();
  for (int32_t r = 0; r < rows; ++r) {{
    double result[N_TARGET * MAX_N_CLASS] = {{0}};
    predict((union Entry*)(x + (size_t)r * columns), raw, result);
    out[r] = result[0];
  }}
}}
"""
_COMPILERS = ("cc", "gcc", "clang")
_PR_SET_PDEATHSIG = 1


def find_compiler() -> str | None:
    """The C compiler on PATH, if any."""
    for name in _COMPILERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def build(model_file: Path, out: Path) -> None:
    """Compiles the LightGBM model in ``model_file`` into the shared library ``out`` (written whole or not
    at all). Raises RuntimeError when something is missing or fails."""
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError(f"no C compiler on PATH (tried {', '.join(_COMPILERS)})")
    # Only the compiling child imports Treelite and TL2cgen.
    import tl2cgen
    import treelite

    with tempfile.TemporaryDirectory(prefix="nextbest-codegen-") as tmp:
        src = Path(tmp)
        model = treelite.frontend.load_lightgbm_model(str(model_file))
        tl2cgen.generate_c_code(model, dirpath=str(src), params={"parallel_comp": 0})
        if not (src / "header.h").is_file() or "union Entry" not in (src / "header.h").read_text():
            raise RuntimeError("TL2cgen wrote no header.h with union Entry: an unsupported TL2cgen version")
        sources = sorted(src.glob("*.c"))
        for path in sources:
            code = path.read_text()
            path.write_text(_MISSING.sub(r"!isnan(data[\1].fvalue)", code))
        (src / "nextbest_entry.c").write_text(_WRAPPER)
        library = src / "model.so"
        command = [compiler, "-O2", "-std=c99", "-shared", "-fPIC", "-o", str(library)]
        command += [str(p) for p in sources] + [str(src / "nextbest_entry.c"), "-lm"]
        done = subprocess.run(command, cwd=src, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(compiler).name} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        shutil.copyfile(library, staged)
        os.replace(staged, out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: MODEL_FILE OUT_LIBRARY", file=sys.stderr)
        return 2
    # A compilation yields to the server that asked for it on a busy machine, and ends with it.
    os.nice(10)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    try:
        build(Path(argv[0]), Path(argv[1]))
    except Exception as exc:  # the parent logs this line and scores with LightGBM
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
