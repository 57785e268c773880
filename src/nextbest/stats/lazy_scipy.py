"""``scipy.stats``, imported on first use. It takes about a second of CPU to import (most of it parsing
docstrings), and a server needs it only for reports and sample-ratio checks, not to start serving
decisions (issue 19: SERVING within 2 s; benchmarks/startup.py)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["stats"]


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


stats = _LazyModule("scipy.stats")
