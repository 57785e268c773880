"""Model artifacts on disk, shared by training (which writes them) and the registry (which loads them).

::

    models/<kind>/<version>/card.json      the model card: features, data window, rows, metrics, versions
    models/<kind>/<version>/<files>        the model files the card lists, with their SHA-256
    models/<kind>/PROMOTED                 the version the server loads

A version is named after the digest of its files, so training twice on the same data with the same seed
gives the same version.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ModelCard",
    "ModelKind",
    "bundled_models_path",
    "promote",
    "promoted_version",
    "read_card",
    "write_artifact",
]

PROMOTED = "PROMOTED"
CARD = "card.json"


class ModelKind(StrEnum):
    PROPENSITY = "propensity"
    UPLIFT = "uplift"
    SEND_TIME = "send-time"
    CHURN = "churn"  # customer scores: churn risk and purchase propensity (models.churn)


class ModelCard(BaseModel):
    """What a model is, what it was trained on and how well it did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ModelKind
    version: str
    feature_set: str = Field(description="The feature definitions' version, or 'csv:<schema>' for a CSV.")
    features: list[str] = Field(description="Model inputs, in order.")
    categorical: list[str] = Field(default_factory=list)
    # Vocabulary of each categorical feature coded by the card (the action ids).
    categories: dict[str, list[str]] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="Role -> file name inside the version directory.")
    sha256: dict[str, str] = Field(description="File name -> SHA-256 of its bytes.")
    # Uplift: the flows whose actions the model scores and, within them, the actions it saw randomized
    # often enough to speak for (empty: every action of the flows).
    flows: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)
    outcome: str = ""
    data: dict[str, Any] = Field(default_factory=dict, description="Source, window, split, row counts.")
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    libraries: dict[str, str] = Field(default_factory=dict)
    command: str = ""


def bundled_models_path() -> Path | None:
    """The ``models/`` directory shipped next to the source tree, if there is one."""
    candidate = Path(__file__).resolve().parents[3] / "models"
    return candidate if candidate.is_dir() else None


def write_artifact(root: Path, card: ModelCard, files: Mapping[str, bytes]) -> Path:
    """Writes the files and the card under ``root/<kind>/<version>/``; the version is the digest of the
    files (the card's ``version`` and ``sha256`` are filled in here)."""
    digests = {name: hashlib.sha256(blob).hexdigest() for name, blob in files.items()}
    combined = hashlib.sha256("".join(f"{n}:{d}\n" for n, d in sorted(digests.items())).encode())
    version = f"{card.kind.value}-{combined.hexdigest()[:12]}"
    card = card.model_copy(update={"version": version, "sha256": digests})
    target = root / card.kind.value / version
    target.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        _atomic_write(target / name, blob)
    _atomic_write(target / CARD, (json.dumps(card.model_dump(mode="json"), indent=2) + "\n").encode())
    return target


def read_card(directory: Path) -> ModelCard:
    return ModelCard.model_validate_json((directory / CARD).read_text())


def promoted_version(root: Path, kind: ModelKind) -> str | None:
    marker = root / kind.value / PROMOTED
    try:
        version = marker.read_text().strip()
    except FileNotFoundError:
        return None
    return version or None


def promote(root: Path, kind: ModelKind, version: str) -> None:
    if not (root / kind.value / version / CARD).is_file():
        raise FileNotFoundError(f"no {kind.value} model {version!r} under {root}")
    _atomic_write(root / kind.value / PROMOTED, (version + "\n").encode())


def _atomic_write(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
