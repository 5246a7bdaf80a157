"""Face perception: detection, the 468-point mesh, expression, and the pipeline that joins them."""

from perception.face.detector import CenterFaceDetector, Detections, HaarDetector
from perception.face.expression import (
    AffectLensExpression,
    ExpressionModel,
    ExpressionNet,
    FerMiniXception,
    MiniXception,
)
from perception.face.landmarks import FaceMesh
from perception.face.pipeline import FacePipeline

__all__ = [
    "AffectLensExpression",
    "CenterFaceDetector",
    "Detections",
    "ExpressionModel",
    "ExpressionNet",
    "FaceMesh",
    "FacePipeline",
    "FerMiniXception",
    "HaarDetector",
    "MiniXception",
]
