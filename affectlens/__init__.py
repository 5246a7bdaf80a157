"""AffectLens: multimodal affective perception that runs offline on a laptop CPU.

``from affectlens import Analyzer`` is the entry point; result types live in ``affectlens.types``.
Heavy modules load on first use, so ``import affectlens`` stays fast and never touches weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from affectlens.errors import AffectLensError, MediaError, RegistryError, WeightsError
from affectlens.labels import CANONICAL_EMOTIONS, canonical_label
from affectlens.registry import (
    create_face_detector,
    create_face_expression,
    create_face_landmarker,
    list_models,
)
from affectlens.tree import AffectTree, Evidence, TreeNode
from affectlens.types import AnalysisResult, EmotionPrediction, FaceObservation, FaceQuality, FrameResult

if TYPE_CHECKING:
    from affectlens.analyzer import Analyzer, build_face_pipeline
    from affectlens.annotate import load_annotations
    from affectlens.conversation import Conversation
    from generation.create import ImageGenerator
    from generation.edit import build_expression_editor
    from generation.talking_head import TalkingHead, build_talking_head

__all__ = [
    "CANONICAL_EMOTIONS",
    "AffectLensError",
    "AffectTree",
    "AnalysisResult",
    "Analyzer",
    "Conversation",
    "EmotionPrediction",
    "Evidence",
    "FaceObservation",
    "FaceQuality",
    "FrameResult",
    "ImageGenerator",
    "MediaError",
    "RegistryError",
    "TalkingHead",
    "TreeNode",
    "WeightsError",
    "__version__",
    "build_expression_editor",
    "build_face_pipeline",
    "build_talking_head",
    "canonical_label",
    "create_face_detector",
    "create_face_expression",
    "create_face_landmarker",
    "list_models",
    "load_annotations",
]


def __getattr__(name: str) -> Any:
    # The analyzer imports perception, which imports these shared types: load it lazily to keep
    # the dependency direction one way (types <- perception <- API).
    if name in ("Analyzer", "build_face_pipeline"):
        from affectlens import analyzer

        return getattr(analyzer, name)
    if name == "Conversation":
        from affectlens.conversation import Conversation

        return Conversation
    if name == "ImageGenerator":
        from generation.create import ImageGenerator

        return ImageGenerator
    if name == "build_expression_editor":
        from generation.edit import build_expression_editor

        return build_expression_editor
    if name in ("TalkingHead", "build_talking_head"):
        from generation import talking_head

        return getattr(talking_head, name)
    if name == "load_annotations":
        from affectlens import annotate

        return annotate.load_annotations
    raise AttributeError(f"module 'affectlens' has no attribute {name!r}")
