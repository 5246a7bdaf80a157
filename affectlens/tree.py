"""The affective tree: attributes → expressions → emotion → cause → appraisal → strategy → reply, as typed nodes.

Each ``TreeNode`` holds a JSON-able structured ``value``, a ``confidence`` in [0, 1], the ``Evidence`` it rests on
(modality, time span or frame range, cue) and optional prose ``text`` with where it came from (``"template"``,
``"safety"`` for the safety module's reply, or ``"lm:<name>"``). The structured values are computed
deterministically (``fusion.tree.build_tree``); the prose may be written by a language model and never feeds back
into them. The overall rationale is the ``emotion`` node's ``text``. ``AffectTree.safety`` records the risk
assessment of the words (``fusion.safety``) and whether it replaced the reply. ``AffectTree.to_dict()`` is described
by ``affectlens/schema/tree.schema.json``; ``render()`` turns the tree into a readable reasoning trace. Shared types
only: no pipeline code, no torch.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, Literal, get_args

TREE_SCHEMA_VERSION: Final = "1.0"
TREE_SCHEMA_PATH: Final = Path(__file__).resolve().parent / "schema" / "tree.schema.json"

Stage = Literal["attributes", "expressions", "emotion", "cause", "appraisal", "strategy", "reply"]
#: The seven stages, in reasoning order (also the order of ``AffectTree``'s node fields).
STAGES: Final[tuple[Stage, ...]] = get_args(Stage)
EvidenceModality = Literal["face", "voice", "text", "scene", "dialogue"]
EVIDENCE_MODALITIES: Final[tuple[EvidenceModality, ...]] = get_args(EvidenceModality)
_TEXT_SOURCE = re.compile(r"^(template|safety|lm:\S.*)$")
RiskLevel = Literal["none", "concern", "crisis"]
#: The levels of ``AffectTree.safety["level"]`` (``fusion.safety.LEVELS``).
RISK_LEVELS: Final[tuple[RiskLevel, ...]] = get_args(RiskLevel)


def _jsonable(value: Any, what: str) -> Any:
    """``value`` as plain JSON types (tuples become lists, numpy floats become floats), so a tree round-trips
    through JSON unchanged; refuses what JSON cannot hold (NaN, arrays, objects)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-able (plain dicts, lists, str, finite numbers): {exc}") from exc


def _opt_round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class Evidence:
    """One cue a node rests on: which modality, where (seconds and/or frame indices), and what was seen.

    ``start``/``end`` are seconds in ``source`` (``None`` for an image or typed text); ``frames`` the first and
    last frame index in ``source`` (an image is frame 0); ``source`` names the input when a tree spans several;
    ``value`` an optional JSON-able measurement behind the cue (e.g. an AU intensity).
    """

    modality: EvidenceModality
    cue: str
    start: float | None = None
    end: float | None = None
    frames: tuple[int, int] | None = None
    source: str | None = None
    value: Any = None

    def __post_init__(self) -> None:
        if self.modality not in EVIDENCE_MODALITIES:
            raise ValueError(f"unknown evidence modality {self.modality!r}; valid: {', '.join(EVIDENCE_MODALITIES)}")
        start, end = _opt_round(self.start, 3), _opt_round(self.end, 3)
        if start is not None and end is not None and end < start:
            raise ValueError(f"evidence ends before it starts ({start} > {end})")
        frames = None if self.frames is None else (int(self.frames[0]), int(self.frames[1]))
        if frames is not None and not 0 <= frames[0] <= frames[1]:
            raise ValueError(f"evidence frames must be (first, last) with 0 <= first <= last, got {frames}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "value", _jsonable(self.value, "evidence value"))

    def where(self) -> str:
        """``"face, 1.20-3.40 s, frames 6-17"``: the modality and the place, for reading."""
        parts: list[str] = [self.modality]
        if self.source:
            parts.append(self.source)
        if self.start is not None and self.end is not None:
            parts.append(f"{self.start:.2f}-{self.end:.2f} s" if self.end > self.start else f"{self.start:.2f} s")
        if self.frames is not None:
            first, last = self.frames
            parts.append(f"frame {first}" if first == last else f"frames {first}-{last}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "cue": self.cue,
            "start": self.start,
            "end": self.end,
            "frames": None if self.frames is None else list(self.frames),
            "source": self.source,
            "value": self.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        frames = data.get("frames")
        return cls(
            data["modality"], data["cue"], data.get("start"), data.get("end"),
            None if frames is None else (frames[0], frames[1]), data.get("source"), data.get("value"),
        )  # fmt: skip


@dataclass(frozen=True)
class TreeNode:
    """One stage of the tree: its structured ``value`` (JSON-able), ``confidence`` in [0, 1], the evidence, and
    optional prose ``text`` from ``text_source`` (``"template"``, ``"safety"`` or ``"lm:<name>"``; ``None``
    without text)."""

    stage: Stage
    value: Any
    confidence: float
    evidence: tuple[Evidence, ...] = ()
    text: str | None = None
    text_source: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; valid: {', '.join(STAGES)}")
        confidence = float(self.confidence)
        if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
            raise ValueError(f"{self.stage}: confidence must be in [0, 1], got {self.confidence}")
        if (self.text is None) != (self.text_source is None):
            raise ValueError(f"{self.stage}: text and text_source go together (both set or both None)")
        if self.text_source is not None and not _TEXT_SOURCE.match(self.text_source):
            raise ValueError(
                f"{self.stage}: text_source must be 'template', 'safety' or 'lm:<name>', got {self.text_source!r}"
            )
        object.__setattr__(self, "confidence", round(confidence, 4))
        object.__setattr__(self, "evidence", tuple(self.evidence))
        object.__setattr__(self, "value", _jsonable(self.value, f"{self.stage} value"))

    @classmethod
    def pending(cls, stage: Stage) -> TreeNode:
        """A stage not decided yet (``value`` ``None``, confidence 0): what a planner sees for strategy and reply."""
        return cls(stage, None, 0.0)

    def with_text(self, text: str, source: str) -> TreeNode:
        """The same node with new prose; the structured value and evidence stay as they are."""
        return replace(self, text=text, text_source=source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "value": self.value,
            "confidence": self.confidence,
            "evidence": [e.to_dict() for e in self.evidence],
            "text": self.text,
            "text_source": self.text_source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TreeNode:
        return cls(
            data["stage"], data.get("value"), data["confidence"],
            tuple(Evidence.from_dict(e) for e in data.get("evidence", [])), data.get("text"), data.get("text_source"),
        )  # fmt: skip


@dataclass(frozen=True)
class AffectTree:
    """What the reasoning stage returns: the seven stages of the BRIEF, each a ``TreeNode``.

    ``sources`` lists the inputs as (source, kind) pairs; ``models`` which fuser, planner and writer made it;
    ``warnings`` what limited it (e.g. the untrained fusion prior, a writer that failed). The rationale (why this
    emotion) is ``emotion.text``. ``safety`` is the risk assessment of the words (``fusion.safety.RiskAssessment``
    as a dict: ``level``, ``categories``, ``score``, ``cues``, ``why``) plus ``reply_overridden`` (the reply is
    the safety module's); ``None`` in trees built without it. ``affect`` is the user's affect state over a
    conversation (``affectlens.conversation``: the state after this turn, the recent trajectory and a sentence
    about it); ``None`` outside a conversation.
    """

    attributes: TreeNode
    expressions: TreeNode
    emotion: TreeNode
    cause: TreeNode
    appraisal: TreeNode
    strategy: TreeNode
    reply: TreeNode
    sources: tuple[tuple[str, str], ...] = ()
    models: dict[str, str | None] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    safety: dict[str, Any] | None = None
    affect: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for stage in STAGES:
            node = getattr(self, stage)
            if not isinstance(node, TreeNode) or node.stage != stage:
                raise ValueError(f"AffectTree.{stage} must be a TreeNode of stage {stage!r}")
        object.__setattr__(self, "sources", tuple((str(s), str(k)) for s, k in self.sources))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        if self.safety is not None:
            safety = _jsonable(self.safety, "safety")
            if not isinstance(safety, dict) or safety.get("level") not in RISK_LEVELS:
                raise ValueError(f"safety must be a dict whose level is one of {', '.join(RISK_LEVELS)}")
            if not isinstance(safety.get("reply_overridden"), bool):
                raise ValueError("safety must say whether the reply was overridden (reply_overridden: bool)")
            object.__setattr__(self, "safety", safety)
        if self.affect is not None:
            affect = _jsonable(self.affect, "affect")
            if not isinstance(affect, dict) or not isinstance(affect.get("trajectory"), str):
                raise ValueError("affect must be a dict with the trajectory sentence (trajectory: str)")
            object.__setattr__(self, "affect", affect)

    @property
    def nodes(self) -> tuple[TreeNode, ...]:
        """The seven nodes in ``STAGES`` order."""
        return tuple(getattr(self, stage) for stage in STAGES)

    @property
    def rationale(self) -> str | None:
        """Why this emotion, in prose (the ``emotion`` node's text)."""
        return self.emotion.text

    def cause_sentences(self) -> list[str]:
        """The person's sentences the ``cause`` node quotes (empty when there were no words)."""
        value = self.cause.value if isinstance(self.cause.value, dict) else {}
        return [str(s.get("text", "")) for s in value.get("sentences") or [] if isinstance(s, dict) and s.get("text")]

    def replace_node(self, node: TreeNode) -> AffectTree:
        """A tree with ``node`` in its stage's place."""
        changes: dict[str, Any] = {node.stage: node}
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": TREE_SCHEMA_VERSION,
            **{stage: getattr(self, stage).to_dict() for stage in STAGES},
            "sources": [{"source": s, "kind": k} for s, k in self.sources],
            "models": dict(self.models),
            "warnings": list(self.warnings),
            "safety": None if self.safety is None else dict(self.safety),
            "affect": None if self.affect is None else dict(self.affect),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AffectTree:
        version = data.get("schema_version", TREE_SCHEMA_VERSION)
        if version != TREE_SCHEMA_VERSION:
            raise ValueError(f"affective tree schema {version!r} is not supported (this is {TREE_SCHEMA_VERSION!r})")
        known = {f.name for f in fields(cls)} | {"schema_version"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown affective tree fields {sorted(unknown)}")
        return cls(
            **{stage: TreeNode.from_dict(data[stage]) for stage in STAGES},
            sources=tuple((s["source"], s["kind"]) for s in data.get("sources", [])),
            models=dict(data.get("models", {})),
            warnings=tuple(data.get("warnings", [])),
            safety=data.get("safety"),
            affect=data.get("affect"),
        )

    @classmethod
    def from_json(cls, text: str) -> AffectTree:
        return cls.from_dict(json.loads(text))

    def render(self, width: int = 100, max_cues: int = 6) -> str:
        """The tree as a readable reasoning trace: a safety line when the words showed a risk, then one block per
        stage with its confidence, a one-line summary of the structured value, the prose (marked with its source
        when a language model or the safety module wrote it) and the cues."""
        inputs = ", ".join(f"{s} ({k})" for s, k in self.sources) or "no input"
        lines = [f"Affective tree for {inputs}"]
        if self.safety is not None and self.safety["level"] != "none":
            s = self.safety
            categories = ", ".join(c.replace("_", " ") for c in s.get("categories") or [])
            head = f"⚠ safety: {s['level']} [{float(s.get('score', 0)):.2f}]" + (
                f" ({categories})" if categories else ""
            )
            tail = " The reply is the safety module's." if s["reply_overridden"] else ""
            wrapper = textwrap.TextWrapper(width=width, initial_indent="", subsequent_indent="    ")
            lines.extend(wrapper.wrap(f"{head}: {s.get('why', '')}{tail}"))
        for i, node in enumerate(self.nodes):
            last = i == len(STAGES) - 1
            branch, stem = ("└─", "   ") if last else ("├─", "│  ")
            header = textwrap.TextWrapper(
                width=width, initial_indent=f"{branch} {node.stage} [{node.confidence:.2f}]: ",
                subsequent_indent=f"{stem}    ",
            )  # fmt: skip
            lines.extend(header.wrap(_summary(node)))
            if node.text:
                label = "" if node.text_source == "template" else f"({node.text_source}) "
                wrapper = textwrap.TextWrapper(
                    width=width, initial_indent=f"{stem}  » {label}", subsequent_indent=f"{stem}    "
                )
                lines.extend(wrapper.wrap(node.text))
            if i and node.evidence and node.evidence == self.nodes[i - 1].evidence:
                lines.append(f"{stem}  · (cues as above)")
                continue
            for cue in node.evidence[:max_cues]:
                wrapper = textwrap.TextWrapper(
                    width=width, initial_indent=f"{stem}  · [{cue.where()}] ", subsequent_indent=f"{stem}      "
                )
                lines.extend(wrapper.wrap(cue.cue))
            if len(node.evidence) > max_cues:
                lines.append(f"{stem}  · … {len(node.evidence) - max_cues} more cue(s)")
        if self.affect is not None:
            wrapper = textwrap.TextWrapper(
                width=width, initial_indent="affect over the conversation: ", subsequent_indent="    "
            )
            lines.extend(wrapper.wrap(self.affect["trajectory"]))
        if self.models:
            lines.append("models: " + ", ".join(f"{k}={v or '-'}" for k, v in self.models.items()))
        lines.extend(f"note: {w}" for w in self.warnings)
        return "\n".join(lines)


# ---- one-line summaries of the structured values, for render() (read with .get: values are documented JSON) ----


def _pct(value: Any) -> str:
    return f"{float(value):.0%}" if isinstance(value, int | float) else "?"


def _signed(value: Any) -> str:
    return f"{float(value):+.2f}" if isinstance(value, int | float) else "?"


def _summary(node: TreeNode) -> str:
    value = node.value
    if not isinstance(value, dict):
        return "pending" if value is None else str(value)
    summarise = _SUMMARIES.get(node.stage)
    return summarise(value) if summarise else json.dumps(value)[:200]


def _attributes_summary(v: dict[str, Any]) -> str:
    parts = []
    faces = v.get("faces") or {}
    if faces.get("frames"):
        count = faces.get("count", 0)
        text = f"{count} face(s) in view" if count else "no face in view"
        main = v.get("main_face")
        if main:
            bits = [f"quality {float(main.get('quality', 0)):.2f}"]
            pose = main.get("head_pose")
            if pose:
                bits.append(f"head yaw {pose['yaw']:+.0f}° pitch {pose['pitch']:+.0f}° roll {pose['roll']:+.0f}°")
            gaze = main.get("gaze")
            if gaze:
                bits.append(f"gaze yaw {gaze['yaw']:+.0f}° pitch {gaze['pitch']:+.0f}°")
            text += f" (main face: {', '.join(bits)})"
        parts.append(text)
    voice = v.get("voice")
    if voice:
        text = f"speech {voice.get('speech_seconds', 0):.1f} s"
        if voice.get("duration"):
            text += f" of {voice['duration']:.1f} s"
        if voice.get("speaking_rate") is not None:
            text += f", {voice['speaking_rate']:.1f} syll/s"
        if voice.get("pitch_mean") is not None:
            text += f", pitch {voice['pitch_mean']:.0f} Hz"
        parts.append(text)
    words = v.get("words")
    if words:
        parts.append(f"{words.get('words', 0)} word(s) {'typed' if words.get('typed') else 'spoken'}")
    return "; ".join(parts) or "nothing observed"


def _expressions_summary(v: dict[str, Any]) -> str:
    parts = []
    aus = v.get("action_units") or []
    if aus:
        parts.append("AUs " + ", ".join(f"{a['au']} {a['name']} {a['intensity']:.1f}" for a in aus[:4]))
    face = v.get("facial_expression")
    if face:
        parts.append(f"face {face['label']} {_pct(face.get('confidence'))}")
    tone = v.get("vocal_tone")
    if tone:
        descriptors = ", ".join(tone.get("descriptors") or [])
        parts.append(
            f"voice {tone['label']} {_pct(tone.get('confidence'))}" + (f" ({descriptors})" if descriptors else "")
        )
    words = v.get("salient_words") or []
    if words:
        parts.append("words " + ", ".join(w["word"] for w in words[:5]))
    return "; ".join(parts) or "no expression observed"


def _emotion_summary(v: dict[str, Any]) -> str:
    if v.get("label") is None:
        return "uncertain (nothing to read an emotion from)"
    if v.get("uncertain"):
        head = f"uncertain (abstains; top {v['label']} {_pct(v.get('confidence'))})"
    else:
        head = f"{v['label']} {_pct(v.get('confidence'))}"
    head += f", valence {_signed(v.get('valence'))}, arousal {_signed(v.get('arousal'))}"
    modalities = v.get("modalities") or {}
    if modalities:
        head += "; " + ", ".join(
            f"{m} {d['label']} {_pct(d.get('confidence'))} (w {float(d.get('weight', 0)):.2f})"
            for m, d in modalities.items()
        )
    agreement = v.get("agreement")
    if agreement in ("agree", "mixed", "conflict"):
        head += f" → {agreement}"
    return head


def _cause_summary(v: dict[str, Any]) -> str:
    if not v.get("observable"):
        return "not observable from the scene alone"
    sentences = v.get("sentences") or []
    quoted = " ".join(f"“{s['text']}”" for s in sentences) or "?"
    words = v.get("trigger_words") or []
    return quoted + (f" (words: {', '.join(words)})" if words else "")


def _appraisal_summary(v: dict[str, Any]) -> str:
    need = v.get("need") or "?"
    basis = v.get("emotion")
    return f"needs {need}" + (f" (from {basis}{', tentative' if v.get('tentative') else ''})" if basis else "")


def _strategy_summary(v: dict[str, Any]) -> str:
    strategies = v.get("strategies") or []
    return " + ".join(f"{s['strategy']} ({float(s.get('confidence', 0)):.2f})" for s in strategies) or "none"


def _reply_summary(v: dict[str, Any]) -> str:
    return "using " + (" + ".join(v.get("strategies") or []) or "no strategy")


_SUMMARIES = {
    "attributes": _attributes_summary,
    "expressions": _expressions_summary,
    "emotion": _emotion_summary,
    "cause": _cause_summary,
    "appraisal": _appraisal_summary,
    "strategy": _strategy_summary,
    "reply": _reply_summary,
}
