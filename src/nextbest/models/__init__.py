"""Models: the scoring features, the registry of promoted models, artifacts and model cards, and the
send-time model. The decision pipeline's scoring stage (``nextbest.decision.scoring``) uses them."""

from nextbest.models.artifacts import ModelCard, ModelKind, bundled_models_path, promote, read_card
from nextbest.models.registry import ModelRegistry, ModelSet, ModelState
from nextbest.models.send_time import SendTimeModel, Timing

__all__ = [
    "ModelCard",
    "ModelKind",
    "ModelRegistry",
    "ModelSet",
    "ModelState",
    "SendTimeModel",
    "Timing",
    "bundled_models_path",
    "promote",
    "read_card",
]
