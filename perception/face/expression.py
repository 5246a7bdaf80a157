"""Facial expression models. ``fer-mini-xception``: the mini-Xception of ``fer`` ported to PyTorch.

The Keras HDF5 file is read with h5py (no TensorFlow) and its weights copied into an equivalent
PyTorch module, TensorFlow's asymmetric 'same' padding included, so the port reproduces the original.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectlens import weights
from affectlens.labels import CANONICAL_EMOTIONS, canonical_label
from affectlens.registry import register

logger = logging.getLogger(__name__)

#: Output order of the fer model (the original FER2013 order).
FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass(frozen=True)
class MiniXceptionConfig:
    """Architecture of mini-Xception (Arriaga et al. 2017)."""

    in_channels: int = 1
    stem_channels: int = 8
    block_channels: tuple[int, ...] = (16, 32, 64, 128)
    num_classes: int = 7
    input_size: int = 64
    bn_eps: float = 1e-3


class _TFSameMaxPool(nn.Module):
    """3x3/2 max pooling with TensorFlow's 'same' padding (extra padding at the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h = max((-(-h // 2) - 1) * 2 + 3 - h, 0)
        pad_w = max((-(-w // 2) - 1) * 2 + 3 - w, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=float("-inf"))
        return F.max_pool2d(x, 3, 2)


class _SeparableConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )


class _Block(nn.Module):
    """Two separable convolutions + TF-same max pool, plus a strided 1x1 residual."""

    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.sep1 = _SeparableConv(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=eps)
        self.sep2 = _SeparableConv(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.pool = _TFSameMaxPool()
        self.residual = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.residual_bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.residual_bn(self.residual(x))


class MiniXception(nn.Module):
    """Input Bx1x64x64 in [-1, 1]; output Bx7 logits in ``FER_LABELS`` order."""

    def __init__(self, config: MiniXceptionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MiniXceptionConfig()
        c = config.stem_channels
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, c, 3, bias=False),
            nn.BatchNorm2d(c, eps=config.bn_eps),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, bias=False),
            nn.BatchNorm2d(c, eps=config.bn_eps),
            nn.ReLU(),
        )
        blocks = []
        for cout in config.block_channels:
            blocks.append(_Block(c, cout, config.bn_eps))
            c = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(c, config.num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))


@dataclass(frozen=True)
class ExpressionNetConfig:
    """Architecture of our own expression CNN (``affectlens-expression``): a VGG-style stack of 3x3
    convolutions (BatchNorm, ReLU), max-pooled between stages, global average pooling, dropout, linear."""

    in_channels: int = 1
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_classes: int = 7
    input_size: int = 48
    dropout: float = 0.3


class ExpressionNet(nn.Module):
    """Input Bx1xSxS grey in [-1, 1] (S = ``config.input_size``); output Bx``num_classes`` logits."""

    def __init__(self, config: ExpressionNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ExpressionNetConfig()
        layers: list[nn.Module] = []
        cin = config.in_channels
        for stage, (width, depth) in enumerate(zip(config.widths, config.depths, strict=True)):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(depth):
                layers += [
                    nn.Conv2d(cin, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                cin = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(cin, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x).mean(dim=(2, 3))))


class ExpressionEnsemble(nn.Module):
    """The mean logits of several ``ExpressionNet`` members (trained with different seeds)."""

    def __init__(self, members: list[ExpressionNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (Guo et al. 2017), by L-BFGS on log T."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits, labels = logits.detach().float().clone(), labels.long().clone()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def _keras_layers(h5: object) -> dict[str, dict[str, np.ndarray]]:
    """``{layer name: {weight name: array}}`` from a Keras 2 HDF5 file's ``model_weights`` group."""
    import h5py

    assert isinstance(h5, h5py.File)
    out: dict[str, dict[str, np.ndarray]] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            layer = name.split("/")[0]
            out.setdefault(layer, {})[name.split("/")[-1].split(":")[0]] = obj[()]

    h5["model_weights"].visititems(visit)
    return out


def load_keras_mini_xception(path: Path) -> MiniXception:
    """Build a ``MiniXception`` and copy the Keras HDF5 weights into it, following the saved graph."""
    import h5py

    model = MiniXception()
    with h5py.File(path, "r") as h5:
        layers_cfg = json.loads(h5.attrs["model_config"])["config"]["layers"]
        params = _keras_layers(h5)
    # Follow the graph: each Conv/SeparableConv is followed by the BatchNormalization that consumes it.
    consumer = {cfg["inbound_nodes"][0][0][0]: cfg["name"] for cfg in layers_cfg if cfg["inbound_nodes"]}
    convs = [cfg["name"] for cfg in layers_cfg if cfg["class_name"] in ("Conv2D", "SeparableConv2D")]

    def t(array: np.ndarray, *axes: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array.transpose(*axes) if axes else array))

    state: dict[str, torch.Tensor] = {}

    def put_conv(prefix: str, name: str) -> None:  # Keras HWIO -> PyTorch OIHW
        state[f"{prefix}.weight"] = t(params[name]["kernel"], 3, 2, 0, 1)

    def put_separable(prefix: str, name: str) -> None:  # depthwise HWC1 -> C1HW, pointwise 11IO -> OI11
        state[f"{prefix}.0.weight"] = t(params[name]["depthwise_kernel"], 2, 3, 0, 1)
        state[f"{prefix}.1.weight"] = t(params[name]["pointwise_kernel"], 3, 2, 0, 1)

    def put_bn(prefix: str, conv_name: str) -> None:
        p = params[consumer[conv_name]]
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = t(p["gamma"]), t(p["beta"])
        state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"] = t(p["moving_mean"]), t(p["moving_variance"])
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)

    # Keras order: conv1, conv2, then per block sep_a, sep_b, residual conv; finally the 3x3 classifier.
    it = iter(convs)
    for conv_idx, bn_idx in ((0, 1), (3, 4)):
        name = next(it)
        put_conv(f"stem.{conv_idx}", name)
        put_bn(f"stem.{bn_idx}", name)
    for b in range(len(model.blocks)):
        for sep, bn in (("sep1", "bn1"), ("sep2", "bn2")):
            name = next(it)
            put_separable(f"blocks.{b}.{sep}", name)
            put_bn(f"blocks.{b}.{bn}", name)
        name = next(it)
        put_conv(f"blocks.{b}.residual", name)
        put_bn(f"blocks.{b}.residual_bn", name)
    name = next(it)
    put_conv("head", name)
    state["head.bias"] = t(params[name]["bias"])
    model.load_state_dict(state, strict=True)  # every parameter and buffer must have been filled
    return model.eval()


def square_crop(image: np.ndarray, box: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Crop a square around ``box`` (XYXY), enlarged by ``margin`` of its side, zero-padded at the borders."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + margin)
    x1, y1 = round(cx - side / 2), round(cy - side / 2)
    s = max(1, round(side))
    h, w = image.shape[:2]
    out = np.zeros((s, s, *image.shape[2:]), dtype=image.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x1 + s, w), min(y1 + s, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return out


def grey_crop(image: np.ndarray, box: np.ndarray | None, size: int, margin: float = 0.0) -> np.ndarray:
    """The square around ``box`` (the whole image when None), grey, resized to ``size``, float32 in [-1, 1]."""
    if box is not None:
        image = square_crop(image, box, margin)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    interpolation = cv2.INTER_AREA if grey.shape[0] > size else cv2.INTER_LINEAR
    grey = cv2.resize(grey, (size, size), interpolation=interpolation)
    return (grey.astype(np.float32) / 255.0 - 0.5) * 2.0


class ExpressionModel:
    """Expression from a face: grey ``input_size`` square crop in [-1, 1] -> canonical 7-way distribution.

    ``labels`` is the network's output order; ``temperature`` divides the logits (calibration, fitted on
    validation data); ``flip_average`` averages the logits of the face and its mirror image. ``crop_margin`` widens the face box before cropping (CenterFace and mesh boxes are
    close to the FER2013 framing, so the default is none).
    """

    name = "expression"

    def __init__(
        self,
        model: nn.Module,
        labels: tuple[str, ...],
        input_size: int,
        temperature: float = 1.0,
        crop_margin: float = 0.0,
        device: str = "cpu",
        weight_files: dict[str, str] | None = None,
        flip_average: bool = False,
    ) -> None:
        self.weight_files = weight_files or {}
        self.flip_average = flip_average
        # channels-last lets oneDNN pick its fast convolution kernels on CPU (about 1.5x here), same results.
        self.model = model.to(device).to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
        self.labels = labels
        self.input_size = input_size
        self.temperature = temperature
        self.device = device
        self.crop_margin = crop_margin
        # Column j of the canonical distribution takes the model's output index order[j].
        self._order = [
            labels.index(next(lbl for lbl in labels if canonical_label(lbl) == e)) for e in CANONICAL_EMOTIONS
        ]

    def preprocess(self, image: np.ndarray, box: np.ndarray | None = None) -> np.ndarray:
        """RGB/grey uint8 image (and optional XYXY box) -> ``input_size`` square float32 in [-1, 1]."""
        return grey_crop(image, box, self.input_size, self.crop_margin)

    @torch.inference_mode()
    def logits(self, crops: np.ndarray) -> np.ndarray:
        """NxSxS preprocessed crops -> Nx``len(labels)`` raw logits in the network's order."""
        x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))[:, None].to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        if self.flip_average:  # the face and its mirror image in one batch, logits averaged
            both = self.model(torch.cat([x, torch.flip(x, dims=[-1])])).float()
            return ((both[: len(x)] + both[len(x) :]) / 2).cpu().numpy()
        return self.model(x).float().cpu().numpy()

    def predict_batch(self, crops: np.ndarray) -> np.ndarray:
        """NxSxS preprocessed crops -> Nx7 calibrated probabilities in ``CANONICAL_EMOTIONS`` order."""
        if crops.shape[0] == 0:
            return np.zeros((0, len(CANONICAL_EMOTIONS)), np.float32)
        z = self.logits(crops) / self.temperature
        z = np.exp(z - z.max(1, keepdims=True))
        return (z / z.sum(1, keepdims=True))[:, self._order].astype(np.float32)


class FerMiniXception(ExpressionModel):
    """``fer``'s mini-Xception (64x64 input, uncalibrated): the baseline our own model is measured against."""

    name = "fer-mini-xception"

    def __init__(self, model: MiniXception, **kwargs: Any) -> None:
        super().__init__(model, FER_LABELS, MiniXceptionConfig().input_size, **kwargs)


class AffectLensExpression(ExpressionModel):
    """Our own CNN (``ExpressionNet``, trained by ``scripts/train_face_expression.py`` on FER2013 train),
    temperature-calibrated on a validation split held out of train."""

    name = "affectlens-expression"


@register("face_expression", "fer-mini-xception")
def _build_fer(pretrained: bool = True, model_path: str | None = None, **overrides: Any) -> FerMiniXception:
    if not pretrained:
        return FerMiniXception(MiniXception().eval(), **overrides)
    found = weights.locate("fer-mini-xception", model_path)
    files = {found.name: found.sha256}
    return FerMiniXception(load_keras_mini_xception(found.path), weight_files=files, **overrides)


def load_expression_net(path: Path, meta: dict[str, Any]) -> ExpressionNet:
    """Build an ``ExpressionNet`` from its JSON description and load the safetensors state (strictly)."""
    return _load_strict(ExpressionNet(_net_config(meta)), path)


def load_expression_ensemble(path: Path, meta: dict[str, Any]) -> ExpressionEnsemble:
    """Build the ``ExpressionEnsemble`` a model card describes (``members`` x ``config``) and load its state."""
    config = _net_config(meta)
    model = ExpressionEnsemble([ExpressionNet(config) for _ in range(int(meta["members"]))])
    return _load_strict(model, path)


def _net_config(meta: dict[str, Any]) -> ExpressionNetConfig:
    raw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
    return ExpressionNetConfig(**raw)


_M = TypeVar("_M", bound=nn.Module)


def _load_strict(model: _M, path: Path) -> _M:
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    # BatchNorm's num_batches_tracked counters are not saved; everything else must be there.
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ValueError(f"{path}: weights do not match the model (missing {missing}, unexpected {unexpected})")
    return model.eval()


class AffectLensExpressionLarge(AffectLensExpression):
    """Two wider ``ExpressionNet`` members (widths 48-384, 130 epochs, trained on a GPU by the same script):
    more accurate on FER2013, about four times the compute per face, so opt-in rather than the default."""

    name = "affectlens-expression-large"


@register("face_expression", "affectlens-expression")
def _build_affectlens(pretrained: bool = True, model_path: str | None = None, **overrides: Any) -> AffectLensExpression:
    if not pretrained:
        config = ExpressionNetConfig()
        return AffectLensExpression(ExpressionNet(config).eval(), CANONICAL_EMOTIONS, config.input_size, **overrides)
    return _load_affectlens(AffectLensExpression, model_path, overrides)


@register("face_expression", "affectlens-expression-large")
def _build_affectlens_large(
    pretrained: bool = True, model_path: str | None = None, **overrides: Any
) -> AffectLensExpressionLarge:
    if not pretrained:
        config = ExpressionNetConfig(widths=(48, 96, 192, 384))
        model = ExpressionEnsemble([ExpressionNet(config), ExpressionNet(config)]).eval()
        return AffectLensExpressionLarge(model, CANONICAL_EMOTIONS, config.input_size, **overrides)
    return _load_affectlens(AffectLensExpressionLarge, model_path, overrides)


_E = TypeVar("_E", bound=AffectLensExpression)


def _load_affectlens(kind: type[_E], model_path: str | None, overrides: dict[str, Any]) -> _E:
    """``kind``'s shipped ensemble (weights ``kind.name``, card ``kind.name + "-card"``), with the card's
    temperature and mirror averaging unless ``overrides`` sets them."""
    found = weights.locate(kind.name, model_path)
    card = weights.locate(
        f"{kind.name}-card", None if model_path is None else str(Path(model_path).with_suffix(".json"))
    )
    meta = json.loads(card.path.read_text())
    model = load_expression_ensemble(found.path, meta)
    overrides.setdefault("temperature", float(meta["temperature"]))
    overrides.setdefault("flip_average", bool(meta.get("flip_average", False)))
    files = {found.name: found.sha256, card.name: card.sha256}
    return kind(model, tuple(meta["labels"]), model.config.input_size, weight_files=files, **overrides)
