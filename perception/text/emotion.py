"""Text emotion. ``minilm-goemotions``: all-MiniLM-L6-v2 with a trained delta, fine-tuned on GoEmotions.

The frozen base (shipped as the ``all-MiniLM-L6-v2`` weight group) keeps its embeddings and lower layers;
the delta (``text-emotion-minilm-goemotions``: config.json + model.safetensors) replaces its top
``num_trained_layers`` transformer layers and adds two heads over mean-pooled tokens: a 7-way canonical
head (trained on GoEmotions-Ekman) and a 28-label GoEmotions head (independent sigmoids).
``scripts/train_text_emotion.py`` trains the delta and calibrates it on the dev split.

Valence and arousal are not learned: they are the fine-label probabilities' weighted mean of fixed circumplex
positions (``CIRCUMPLEX``). Salient words come from occlusion: each whitespace-delimited word is dropped in
turn and the fall in the top canonical class's probability is its score.
MiniLM and GoEmotions are English (Reddit comments): other languages run, but the output means little.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from torch import nn

from affectlens import weights
from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.registry import register
from affectlens.types import EmotionPrediction, TextEmotion
from perception.text import negation as negation_rule

if TYPE_CHECKING:
    from transformers import BertModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: Weight group of the frozen base encoder and of the trained delta (``weights/manifest.toml``).
BASE_GROUP: Final = "all-MiniLM-L6-v2"
DELTA_GROUP: Final = "text-emotion-minilm-goemotions"
CONFIG_NAME: Final = "config.json"
WEIGHTS_NAME: Final = "model.safetensors"

#: The 28 GoEmotions labels, in the order of the dataset's ``labels.txt`` (the fine head's output order).
GOEMOTIONS_LABELS: Final[tuple[str, ...]] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
    "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear", "gratitude",
    "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief", "remorse", "sadness",
    "surprise", "neutral",
)  # fmt: skip

#: GoEmotions' own fine -> Ekman grouping (Demszky et al. 2020), with Ekman names made canonical (joy ->
#: happiness). The GoEmotions-Ekman split is this table applied to the fine labels.
FINE_TO_CANONICAL: Final[dict[str, str]] = {
    **dict.fromkeys(("anger", "annoyance", "disapproval"), "anger"),
    "disgust": "disgust",
    **dict.fromkeys(("fear", "nervousness"), "fear"),
    **dict.fromkeys(
        (
            "joy",
            "amusement",
            "approval",
            "excitement",
            "gratitude",
            "love",
            "optimism",
            "relief",
            "pride",
            "admiration",
            "desire",
            "caring",
        ),
        "happiness",
    ),
    **dict.fromkeys(("sadness", "disappointment", "embarrassment", "grief", "remorse"), "sadness"),
    **dict.fromkeys(("surprise", "realization", "confusion", "curiosity"), "surprise"),
    "neutral": "neutral",
}

#: (valence, arousal) of each fine label on Russell's circumplex, in [-1, 1]. Hand-placed, approximate:
#: the quadrant follows Russell (1980) and Scherer (2005); magnitudes are our reading, not measured norms.
CIRCUMPLEX: Final[dict[str, tuple[float, float]]] = {
    "admiration": (0.6, 0.3), "amusement": (0.7, 0.5), "anger": (-0.7, 0.8), "annoyance": (-0.5, 0.5),
    "approval": (0.5, 0.1), "caring": (0.6, 0.1), "confusion": (-0.2, 0.3), "curiosity": (0.3, 0.4),
    "desire": (0.5, 0.6), "disappointment": (-0.6, -0.2), "disapproval": (-0.5, 0.3), "disgust": (-0.7, 0.4),
    "embarrassment": (-0.5, 0.4), "excitement": (0.7, 0.8), "fear": (-0.7, 0.7), "gratitude": (0.7, 0.2),
    "grief": (-0.9, -0.3), "joy": (0.8, 0.5), "love": (0.8, 0.4), "nervousness": (-0.5, 0.6),
    "optimism": (0.6, 0.2), "pride": (0.6, 0.4), "realization": (0.1, 0.2), "relief": (0.5, -0.4),
    "remorse": (-0.6, -0.2), "sadness": (-0.7, -0.4), "surprise": (0.2, 0.7), "neutral": (0.0, 0.0),
}  # fmt: skip

_WORD = re.compile(r"\S+")
_EDGE_PUNCT = "\"'`“”‘’()[]{}<>.,;:!?*_~-–—…"


@dataclass(frozen=True)
class TextEmotionConfig:
    """What the delta is and how its outputs are calibrated; saved as ``config.json`` beside the weights.

    ``base_config`` holds the base encoder's ``BertConfig`` fields, so the delta builds without the base.
    ``class_bias`` (added to the canonical logits, ``classes`` order) and ``temperature`` (dividing them)
    are chosen on the dev split; ``fine_threshold`` is the probability above which a fine label counts as
    present, also chosen on dev. ``training`` records provenance (data, seed, metrics).
    """

    base: str = BASE_GROUP
    base_config: dict[str, Any] = field(default_factory=dict)
    num_trained_layers: int = 3
    max_length: int = 128
    classes: tuple[str, ...] = CANONICAL_EMOTIONS
    fine_labels: tuple[str, ...] = GOEMOTIONS_LABELS
    dropout: float = 0.1
    temperature: float = 1.0
    class_bias: tuple[float, ...] = (0.0,) * len(CANONICAL_EMOTIONS)
    fine_threshold: float = 0.5
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.classes != CANONICAL_EMOTIONS:
            raise ValueError(f"classes must be the canonical emotions {CANONICAL_EMOTIONS}, got {self.classes}")
        if len(self.class_bias) != len(self.classes):
            raise ValueError(f"class_bias needs {len(self.classes)} values, got {len(self.class_bias)}")
        layers = int(self.base_config.get("num_hidden_layers", self.num_trained_layers))
        if not 1 <= self.num_trained_layers <= layers:
            raise ValueError(f"num_trained_layers must be in [1, {layers}], got {self.num_trained_layers}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TextEmotionConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown text-emotion config keys {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**values)


def _bert_config(config: TextEmotionConfig) -> Any:
    from transformers import BertConfig

    # sdpa is what BertModel itself picks on torch >= 2.1; a bare config would leave the choice unset.
    settings: dict[str, Any] = {**config.base_config, "attn_implementation": "sdpa"}
    return BertConfig(**settings)


class TextEmotionDelta(nn.Module):
    """What is trained over the base: its top transformer layers and the two heads.

    ``heads`` maps mean-pooled features Bx``hidden_size`` to canonical logits Bx7 and fine logits Bx28.
    """

    def __init__(self, config: TextEmotionConfig) -> None:
        super().__init__()
        from transformers.models.bert.modeling_bert import BertLayer

        self.config = config
        bert = _bert_config(config)
        self.layers = nn.ModuleList(BertLayer(bert) for _ in range(config.num_trained_layers))
        self.dropout = nn.Dropout(config.dropout)
        self.canonical_head = nn.Linear(bert.hidden_size, len(config.classes))
        self.fine_head = nn.Linear(bert.hidden_size, len(config.fine_labels))

    def heads(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bx``hidden_size`` pooled features -> (Bx7 canonical logits, Bx28 fine logits), uncalibrated."""
        x = self.dropout(pooled)
        return self.canonical_head(x), self.fine_head(x)

    @classmethod
    def from_base(cls, config: TextEmotionConfig, encoder: BertModel) -> TextEmotionDelta:
        """A delta whose layers start as copies of the base's top layers and whose heads start small (training)."""
        delta = cls(config)
        top = encoder.encoder.layer[-config.num_trained_layers :]
        for mine, theirs in zip(delta.layers, top, strict=True):
            mine.load_state_dict(theirs.state_dict())
        for head in (delta.canonical_head, delta.fine_head):
            nn.init.normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        return delta

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (cast to ``dtype`` if given) into ``directory``."""
        return save_delta(self, self.config, directory, CONFIG_NAME, WEIGHTS_NAME, dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TextEmotionDelta:
        """Load a delta written by ``save_pretrained`` (float32 in memory whatever the stored dtype)."""
        folder = Path(directory)
        delta = cls(TextEmotionConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text())))
        delta.load_state_dict(load_delta_state(folder / WEIGHTS_NAME), strict=True)
        return delta.eval()


def save_delta(
    delta: nn.Module, config: Any, directory: str | Path, config_name: str, weights_name: str, dtype: torch.dtype | None
) -> Path:
    """Write a delta over the MiniLM base: ``config.to_dict()`` as ``config_name`` and its state (cast to ``dtype``
    if given; the base's name in the metadata) as ``weights_name``, in ``directory``."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in delta.state_dict().items()}
    save_file(state, str(out / weights_name), metadata={"format": "pt", "base": config.base})
    (out / config_name).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return out


def load_delta_state(path: Path) -> dict[str, torch.Tensor]:
    """A delta's state written by ``save_delta``, as float32 whatever the stored dtype."""
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(path)).items()}


def swap_top_layers(encoder: BertModel, layers: nn.ModuleList, base_config: dict[str, Any], what: str) -> None:
    """Freeze ``encoder`` and put ``layers`` in place of its top ones, once the delta they come from (which recorded
    its base's ``base_config``; ``what`` names it in the error) is known to fit this base."""
    expected = base_config_dict(encoder)
    mismatched = {k: (v, expected.get(k)) for k, v in base_config.items() if expected.get(k) != v}
    if mismatched:
        raise ValueError(f"{what} was trained over another base: (delta, base) differ in {mismatched}")
    encoder.requires_grad_(False)
    top = encoder.encoder.layer
    first = len(top) - len(layers)
    for i, layer in enumerate(layers):
        top[first + i] = layer


def load_base(folder: str | Path) -> tuple[BertModel, PreTrainedTokenizerBase]:
    """The base encoder (no pooler, eval mode) and its tokenizer from a local model folder; never downloads."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = Path(folder)
    encoder = BertModel(BertConfig.from_pretrained(folder), add_pooling_layer=False)
    state = {k: v for k, v in load_file(str(folder / WEIGHTS_NAME)).items() if not k.startswith("pooler.")}
    missing, _ = encoder.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{folder}: the base encoder lacks {len(missing)} weights, e.g. {missing[:3]}")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return encoder.eval(), tokenizer


def base_config_dict(encoder: BertModel) -> dict[str, Any]:
    """The architecture fields of ``encoder`` that the delta needs to rebuild its layers."""
    cfg = encoder.config
    keys = (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
        "type_vocab_size", "layer_norm_eps", "pad_token_id",
    )  # fmt: skip
    return {k: getattr(cfg, k) for k in keys}


def pad_ids(ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (BxT ids right-padded with ``pad_id``, BxT attention mask)."""
    length = max((len(s) for s in ids), default=0)
    x = torch.full((len(ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for i, s in enumerate(ids):
        x[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return x, mask


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """BxTxH token states and BxT mask -> BxH mean over real tokens (the sentence-transformers pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class TextEmotionNetwork(nn.Module):
    """The frozen base with its top layers swapped for the delta's: BxT token ids -> (Bx7, Bx28) logits.

    Only the delta trains: ``train()`` keeps the base's embeddings and lower layers in eval mode (no dropout)
    and their parameters never need gradients.
    """

    def __init__(self, encoder: BertModel, delta: TextEmotionDelta) -> None:
        super().__init__()
        swap_top_layers(encoder, delta.layers, delta.config.base_config, "the delta")
        self.encoder = encoder
        self.delta = delta
        self.eval()

    def train(self, mode: bool = True) -> TextEmotionNetwork:
        super().train(mode)
        self.encoder.eval()
        self.delta.train(mode)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.delta.heads(self.embed(input_ids, attention_mask))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """BxT token ids -> Bxd mean-pooled sentence embedding (the heads' input)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)


def tiny_base(seed: int = 0) -> tuple[BertModel, PreTrainedTokenizerBase]:
    """A random 2-layer, 32-wide BERT and a character-level WordPiece tokenizer, built in code (tests, no weights)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab = {tok: i for i, tok in enumerate([*specials, *chars, *(f"##{c}" for c in chars)])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=160,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = BertModel(config, add_pooling_layer=False)
    return encoder.eval(), tokenizer


def _display_word(word: str) -> str:
    return word.strip(_EDGE_PUNCT) or word


class TextEmotionModel:
    """Emotion in English text: canonical 7-way distribution, 28 fine labels, valence/arousal, salient words.

    ``predict`` is the per-text API; ``predict_logits`` / ``predict_arrays`` are the batched numeric layer.
    Texts are cut at ``config.max_length`` tokens (special tokens included), with a logged warning. With
    ``negation`` (the default) ``predict`` lowers a top class whose emotion words the text only negates ("I am not
    sad anymore"; ``perception.text.negation``, ``docs/text-negation.md``); the numeric layer reads the model alone.
    """

    name = "minilm-goemotions"

    def __init__(
        self,
        network: TextEmotionNetwork,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 32,
        top_words: int = 5,
        device: str = "cpu",
        weight_files: dict[str, str] | None = None,
        negation: bool = True,
    ) -> None:
        self.network = network.to(device).eval()
        self.negation = negation
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.top_words = top_words
        self.device = device
        self.weight_files = dict(weight_files or {})
        self._circumplex = np.array([CIRCUMPLEX[label] for label in self.config.fine_labels], np.float64)

    @property
    def config(self) -> TextEmotionConfig:
        return self.network.delta.config

    def describe(self) -> dict[str, Any]:
        """Names and settings, for provenance."""
        return {
            "name": self.name,
            "base": self.config.base,
            "trained_layers": self.config.num_trained_layers,
            "max_length": self.config.max_length,
            "valence_arousal": "fine-label circumplex mapping",
            "salient_words": "occlusion (drop in top-class probability)",
            "negation": (
                f"a negated top class x{negation_rule.NEGATED_SCALE}, the rest to neutral" if self.negation else "off"
            ),
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the delta (config + safetensors); the base is not copied."""
        return self.network.delta.save_pretrained(directory)

    def update_config(self, **changes: Any) -> None:
        """Replace fields of the delta's config in place (calibration: ``temperature``, ``class_bias``, ...)."""
        self.network.delta.config = replace(self.config, **changes)

    # -- batched numeric layer -------------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def predict_logits(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits: (Nx7 canonical, ``CANONICAL_EMOTIONS`` order; Nx28 fine, ``GOEMOTIONS_LABELS`` order).

        Batches run in order of length (less padding); the rows come back in the input order.
        """
        canonical, fine, _ = self.predict_logits_and_embeddings(texts)
        return canonical, fine

    @torch.inference_mode()
    def predict_logits_and_embeddings(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``predict_logits`` and the Nxd pooled sentence embeddings the heads read."""
        n = len(texts)
        canonical = np.zeros((n, len(self.config.classes)), np.float32)
        fine = np.zeros((n, len(self.config.fine_labels)), np.float32)
        pooled = np.zeros((n, self.network.encoder.config.hidden_size), np.float32)
        order = sorted(range(n), key=lambda i: len(texts[i]))
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            embedding = self.network.embed(**self._encode([texts[i] for i in idx]))
            c, f = self.network.delta.heads(embedding)
            canonical[idx], fine[idx] = c.float().cpu().numpy(), f.float().cpu().numpy()
            pooled[idx] = embedding.float().cpu().numpy()
        return canonical, fine, pooled

    def calibrate(self, canonical_logits: np.ndarray, fine_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits -> (Nx7 probabilities, softmax((z + class_bias) / temperature); Nx28 sigmoid probabilities)."""
        z = (canonical_logits + np.asarray(self.config.class_bias, np.float32)) / self.config.temperature
        z = z - z.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs, 1.0 / (1.0 + np.exp(-fine_logits))

    def predict_arrays(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(Nx7 canonical distribution, Nx28 fine probabilities in [0, 1]) for non-empty texts."""
        return self.calibrate(*self.predict_logits(texts))

    def valence_arousal(self, fine: np.ndarray) -> np.ndarray:
        """Nx28 fine probabilities -> Nx2 (valence, arousal) in [-1, 1].

        The probability-weighted mean of the labels' ``CIRCUMPLEX`` positions (neutral sits at the origin),
        so a convex combination of points inside [-1, 1]^2. A fixed mapping, not a trained regressor.
        """
        weights_ = fine.astype(np.float64)
        va = weights_ @ self._circumplex / np.clip(weights_.sum(axis=1, keepdims=True), 1e-9, None)
        return np.clip(va, -1.0, 1.0)

    # -- per-text API ----------------------------------------------------------------------------------

    def _check(self, texts: list[str]) -> None:
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts; wrap a single text as [text]")
        bad_type = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad_type:
            raise TypeError(f"texts must be str; items {bad_type[:10]} are not")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"texts {empty[:10]} are empty or whitespace only: there is nothing to analyse")

    def _covered_chars(self, texts: list[str]) -> list[int]:
        """For each text, the character offset up to which the model sees it (after token truncation)."""
        enc = self.tokenizer(texts, truncation=True, max_length=self.config.max_length, return_offsets_mapping=True)
        return [max((end for _, end in offsets), default=0) for offsets in enc["offset_mapping"]]

    def predict(self, texts: list[str], explain: bool = True) -> list[TextEmotion]:
        """One ``TextEmotion`` per text, in order.

        Args:
            texts: English texts (other languages run, with little meaning).
            explain: compute ``salient_words`` by occlusion (one extra forward pass per word); off for bulk eval.

        Raises:
            ValueError: a text is empty or whitespace only (the caller decides what silence means).
            TypeError: ``texts`` is a bare string or holds non-strings.
        """
        self._check(texts)
        if not texts:
            return []
        covered = self._covered_chars(texts)
        cut = [i for i, (t, c) in enumerate(zip(texts, covered, strict=True)) if t[c:].strip()]
        if cut:
            logger.warning(
                "%d text(s) longer than %d tokens were truncated (items %s); the rest is not analysed",
                len(cut), self.config.max_length, cut[:10],
            )  # fmt: skip
        canonical_logits, fine_logits, embeddings = self.predict_logits_and_embeddings(texts)
        canonical, fine = self.calibrate(canonical_logits, fine_logits)
        if self.negation:
            canonical, fine = negation_rule.adjust(
                texts, canonical, fine, self.config.classes, self.config.fine_labels, FINE_TO_CANONICAL
            )
        va = self.valence_arousal(fine)
        salient = self.salient_words(texts, canonical, covered) if explain else [()] * len(texts)
        out = []
        for i in range(len(texts)):
            emotion = EmotionPrediction.from_vector(canonical[i], self.name, float(va[i, 0]), float(va[i, 1]))
            fine_map = {label: float(p) for label, p in zip(self.config.fine_labels, fine[i], strict=True)}
            out.append(TextEmotion(emotion, fine_map, salient[i], embeddings[i]))
        return out

    def salient_words(
        self, texts: list[str], canonical: np.ndarray, covered: list[int]
    ) -> list[tuple[tuple[str, float], ...]]:
        """Occlusion: for each word the model sees, the drop in the top canonical probability without it.

        A word is a whitespace-delimited chunk (so word pieces and attached punctuation count as one); the
        text is re-scored with that chunk removed. Returns, per text, up to ``top_words`` (word, drop) pairs
        with a positive drop, largest first; words are shown with edge punctuation stripped, and chunks with
        no letter or digit are skipped. Drops are probability differences in [-1, 1].
        """
        variants: list[str] = []
        owners: list[tuple[int, str]] = []
        for i, text in enumerate(texts):
            for match in _WORD.finditer(text):
                if match.start() >= covered[i]:
                    break  # past the truncation point: the model never saw it
                if not any(ch.isalnum() for ch in match.group()):
                    continue
                variants.append(text[: match.start()] + text[match.end() :])
                owners.append((i, _display_word(match.group())))
        scores: list[list[tuple[str, float]]] = [[] for _ in texts]
        if variants:
            occluded, occluded_fine = self.predict_arrays(variants)
            if self.negation:  # read the variants as ``predict`` reads the text (dropping "not" restores the cue)
                occluded, _ = negation_rule.adjust(
                    variants, occluded, occluded_fine, self.config.classes, self.config.fine_labels, FINE_TO_CANONICAL
                )
            for (i, word), probs in zip(owners, occluded, strict=True):
                top = int(np.argmax(canonical[i]))
                scores[i].append((word, float(canonical[i, top] - probs[top])))
        return [
            tuple(sorted((s for s in per_text if s[1] > 0), key=lambda s: -s[1])[: self.top_words])
            for per_text in scores
        ]

    @classmethod
    def tiny(cls, seed: int = 0, num_trained_layers: int = 1, **overrides: Any) -> TextEmotionModel:
        """An untrained delta over ``tiny_base`` (random weights, no files): for tests."""
        encoder, tokenizer = tiny_base(seed)
        config = TextEmotionConfig(
            base="tiny-random-bert", base_config=base_config_dict(encoder), num_trained_layers=num_trained_layers
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            delta = TextEmotionDelta(config)
        return cls(TextEmotionNetwork(encoder, delta), tokenizer, **overrides)


@register("text_emotion", "minilm-goemotions")
def _build_minilm_goemotions(
    pretrained: bool = True,
    model_path: str | None = None,
    base_path: str | None = None,
    **overrides: Any,
) -> TextEmotionModel:
    """``model_path``: a delta folder to use instead of the shipped one; ``base_path``: a base model folder."""
    if not pretrained:
        return TextEmotionModel.tiny(**overrides)
    if model_path is not None:  # a folder the caller trusts (e.g. a fresh training run): no sha256 check
        delta_dir, delta_files = Path(model_path), {}
    else:
        found = weights.locate_group(DELTA_GROUP)
        delta_dir, delta_files = found.path, found.files
    delta = TextEmotionDelta.from_pretrained(delta_dir)
    base = weights.locate_group(delta.config.base, base_path)
    encoder, tokenizer = load_base(base.path)
    return TextEmotionModel(
        TextEmotionNetwork(encoder, delta), tokenizer, weight_files={**base.files, **delta_files}, **overrides
    )
