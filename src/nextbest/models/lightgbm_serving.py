"""LightGBM as the server needs it: the booster and its C library, without the optional integrations.

Importing ``lightgbm`` imports scikit-learn and pandas when they are installed (its ``compat`` module
probes for them), which is over half of a server's start (2.4 s of 4 s measured on the bundled catalog,
benchmarks/startup.py). Serving uses neither: it predicts from numpy arrays through the C API, and
training (``nextbest.training.fit``) feeds ``lgb.Dataset`` numpy arrays too. So the first import of
LightGBM in a process made here hides those optional packages from LightGBM's probe; once the process
has imported LightGBM in full (training, a notebook), it is used as it is.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

__all__ = ["import_lightgbm"]

# What lightgbm.compat probes for with ``try: import ...``; none of it is used by nextbest's models.
_OPTIONAL = ("sklearn", "pandas", "matplotlib", "graphviz", "dask", "pyarrow", "datatable")


def import_lightgbm() -> ModuleType:
    """The ``lightgbm`` module, imported without its optional integrations if not imported yet."""
    loaded = sys.modules.get("lightgbm")
    if loaded is not None:
        return loaded
    hidden = [name for name in _OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes ``import name`` raise ImportError
    try:
        return importlib.import_module("lightgbm")
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
