"""``affectlens eval``: score a model on a labelled image folder (one sub-folder per label), a CSV of texts, or
the safety module on a CSV of messages labelled ``crisis`` or ``none``; the strategy planner and the conversation's
replies on ESConv dialogues (JSONL).

Folder names are mapped to the canonical emotions by ``affectlens.labels.LABEL_MAP``; labels without a
canonical class, unknown to the table, or missing from the model are counted under ``excluded``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from affectlens.errors import MediaError
from affectlens.labels import CANONICAL_EMOTIONS, CIRCUMPLEX, canonical_label
from affectlens.registry import (
    create_face_detector,
    create_face_expression,
    create_speech_emotion,
    create_text_emotion,
)
from perception.media import load_image

if TYPE_CHECKING:
    from affectlens.conversation import Conversation
    from fusion.safety import RiskDetector
    from fusion.strategy import Message, StrategyPlanner

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".mkv"}


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix.

    Macro F1 averages over the classes present in ``y_true``.
    """
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    tp = np.diag(confusion)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    n = int(support.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "per_class": {
            labels[i]: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i in range(k)
            if present[i] or predicted[i] > 0
        },
        "confusion": {"labels": labels, "matrix": confusion.tolist()},
    }


def expected_calibration_error(probabilities: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE: the mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(float(correct[members].mean()) - float(confidence[members].mean()))
    return float(total / max(len(y_true), 1))


def _model_label(name: str, model_labels: tuple[str, ...]) -> str | None:
    """The canonical label a dataset label maps to, or ``None`` when it has none or the model lacks it."""
    try:
        canonical = canonical_label(name)
    except KeyError:
        return None
    return canonical if canonical in model_labels else None


def _label_folders(
    data_dir: Path, model_labels: tuple[str, ...], suffixes: set[str]
) -> tuple[dict[Path, str], dict[str, int]]:
    if not data_dir.is_dir():
        raise MediaError(str(data_dir), "not a directory (expected one sub-folder per label)")
    folders: dict[Path, str] = {}
    excluded: dict[str, int] = {}
    for sub in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        canonical = _model_label(sub.name, model_labels)
        if canonical is None:
            excluded[sub.name] = sum(1 for f in sub.rglob("*") if f.suffix.lower() in suffixes)
        else:
            folders[sub] = canonical
    if not folders:
        raise MediaError(str(data_dir), "no sub-folder is named after a known emotion label")
    return folders, excluded


def _report(task: str, model: str, data: str, truth: list[int], predicted: list[int], **extra: Any) -> dict[str, Any]:
    if not truth:
        raise MediaError(data, "no usable item found")
    report = classification_report(np.array(truth), np.array(predicted), list(CANONICAL_EMOTIONS))
    return {"task": task, "model": model, "data": data, **report, **extra}


#: ``eval face-expression`` in its default mode takes an image whose shorter side is below this as a face crop
#: without looking for a face (FER2013's are 48 px, RAF-DB's aligned faces 100 px; no detector is reliable there).
CROP_MAX_SIDE: Final[int] = 128
#: ... and a larger image as a face crop when its largest detected face covers at least this share of it (FER2013's
#: framing puts CenterFace's box at about 87% of the crop), else it classifies that face's crop.
CROP_MIN_FACE_AREA: Final[float] = 0.5
#: A larger image with no detected face is still taken as a crop when it is about square (crops usually are);
#: a frame of another shape without a face counts as a ``no_face`` error.
CROP_MAX_ASPECT: Final[float] = 1.25


def evaluate_face_expression(
    data_dir: str | Path,
    model: str | None = None,
    detect: bool | None = None,
    limit_per_class: int | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Evaluate a facial expression model on ``data_dir/<label>/*.png``.

    ``detect=None`` (the default) works on face crops and on whole photos or video frames alike, image by image:
    small images (shorter side below ``CROP_MAX_SIDE``) are taken as face crops; in a larger one the largest
    detected face is classified, unless it fills most of the image (``CROP_MIN_FACE_AREA``: a crop) or none is
    found in an about square image (``CROP_MAX_ASPECT``: a crop too tight for the detector); a frame of another
    shape without a face counts as a ``no_face`` error. ``detect=True`` always classifies the largest detected
    face (images without one count as errors); ``detect=False`` always takes the whole image as the crop. The
    report's ``framing`` counts how each image was read.
    """
    data_dir = Path(data_dir)
    folders, excluded = _label_folders(data_dir, CANONICAL_EMOTIONS, IMAGE_SUFFIXES)
    expression = create_face_expression(model)
    detector = create_face_detector() if detect is not False else None
    crops: list[np.ndarray] = []
    truth: list[int] = []
    errors: Counter[str] = Counter()
    framing: Counter[str] = Counter()
    for folder, label in folders.items():
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        for file in files[:limit_per_class]:
            try:
                image = load_image(file)
            except MediaError as exc:
                errors["unreadable"] += 1
                logger.warning("%s", exc)
                continue
            box, how = _face_box(image, detector, detect)
            if how == "no_face":
                errors["no_face"] += 1
                continue
            framing[how] += 1
            crops.append(expression.preprocess(image, box))
            truth.append(CANONICAL_EMOTIONS.index(label))
    if not crops:
        raise MediaError(str(data_dir), "no usable image found")
    batch = np.stack(crops)
    probs = np.concatenate(
        [expression.predict_batch(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)]
    )
    predicted = probs.argmax(1).tolist()
    # Valence/arousal come from the circumplex mapping; check their sign per true class on real data.
    circumplex = np.array([CIRCUMPLEX[e] for e in CANONICAL_EMOTIONS])
    affect = probs @ circumplex
    true = np.array(truth)
    affect_by_class = {
        CANONICAL_EMOTIONS[k]: {"valence": round(float(affect[true == k, 0].mean()), 3),
                                "arousal": round(float(affect[true == k, 1].mean()), 3)}
        for k in sorted(set(truth))
    }  # fmt: skip
    return _report(
        "face-expression", expression.name, str(data_dir), truth, predicted,
        excluded=excluded, errors=dict(errors), affect_by_class=affect_by_class,
        ece=round(expected_calibration_error(probs, true), 4), mean_confidence=round(float(probs.max(1).mean()), 4),
        detect={None: "auto", True: "always", False: "never"}[detect], framing=dict(framing),
    )  # fmt: skip


def _face_box(image: np.ndarray, detector: Any, detect: bool | None) -> tuple[np.ndarray | None, str]:
    """(the box to crop, None for the whole image; how: ``crop`` (the whole image is the face crop), ``face``
    (the largest detected face) or ``no_face``) under ``evaluate_face_expression``'s ``detect`` rule."""
    h, w = image.shape[:2]
    if detect is False or (detect is None and min(h, w) < CROP_MAX_SIDE):
        return None, "crop"
    found = detector.detect(image)
    if len(found) == 0:
        square = max(h, w) / max(min(h, w), 1) <= CROP_MAX_ASPECT
        return None, "crop" if detect is None and square else "no_face"
    areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
    k = int(np.argmax(areas))
    if detect is None and areas[k] >= CROP_MIN_FACE_AREA * h * w:
        return None, "crop"
    return found.boxes[k], "face"


def evaluate_speech_emotion(
    data_dir: str | Path, model: str | None = None, limit_per_class: int | None = None
) -> dict[str, Any]:
    """Evaluate a speech emotion model on ``data_dir/<label>/*.wav|flac|…``, one clip = one prediction.

    Clips are decoded to 16 kHz mono (a video's sound track works too); unreadable or silent clips count
    under ``errors``.
    """
    from perception.audio import load_audio  # lazily: only speech evaluation needs PyAV audio decoding

    data_dir = Path(data_dir)
    folders, excluded = _label_folders(data_dir, CANONICAL_EMOTIONS, AUDIO_SUFFIXES)
    speech = create_speech_emotion(model)
    truth: list[int] = []
    predicted: list[int] = []
    errors: Counter[str] = Counter()
    for folder, label in folders.items():
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        for file in files[:limit_per_class]:
            try:
                prediction = speech.predict(load_audio(file))
            except MediaError as exc:
                errors["unreadable"] += 1
                logger.warning("%s", exc)
                continue
            truth.append(CANONICAL_EMOTIONS.index(label))
            predicted.append(CANONICAL_EMOTIONS.index(prediction.label))
    return _report(
        "speech-emotion", speech.name, str(data_dir), truth, predicted, excluded=excluded, errors=dict(errors)
    )


#: Column names ``eval text-emotion`` looks for (any case) when ``--text-col`` / ``--label-col`` are not given.
TEXT_COLUMNS: Final[tuple[str, ...]] = ("text", "sentence", "utterance", "content")
LABEL_COLUMNS: Final[tuple[str, ...]] = ("label", "labels", "emotion", "emotions")


def _column(table: Any, given: str | None, candidates: tuple[str, ...], flag: str, path: Path) -> str:
    """``given`` if the table has it, else the first of ``candidates`` it has (any case); a ``MediaError``
    naming the file, its columns and ``flag`` otherwise."""
    columns = [str(c) for c in table.columns]
    if given is not None:
        if given not in columns:
            raise MediaError(str(path), f"no column {given!r}; columns: {', '.join(columns)}")
        return given
    by_name = {c.lower(): c for c in columns}
    found = next((by_name[c] for c in candidates if c in by_name), None)
    if found is None:
        raise MediaError(
            str(path),
            f"no column named {' or '.join(candidates)}; columns: {', '.join(columns)} (name one with {flag})",
        )
    return found


def evaluate_text_emotion(
    csv_path: str | Path,
    text_col: str | None = None,
    label_col: str | None = None,
    model: str | None = None,
    limit: int | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Evaluate a text emotion model on a CSV (or TSV, by extension) with a text and a label column (when not
    named, the first of ``TEXT_COLUMNS`` / ``LABEL_COLUMNS`` the file has, in any case).

    Label names go through the same table as the face eval; a cell with several comma-separated labels
    is scored against its first one; rows whose label has no canonical class count under ``excluded``.
    """
    import pandas as pd

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise MediaError(str(csv_path), "file not found")
    try:
        table = pd.read_csv(csv_path, sep="\t" if csv_path.suffix.lower() == ".tsv" else ",", nrows=limit)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise MediaError(str(csv_path), f"not a readable CSV ({exc})") from exc
    text_col = _column(table, text_col, TEXT_COLUMNS, "--text-col", csv_path)
    label_col = _column(table, label_col, LABEL_COLUMNS, "--label-col", csv_path)
    texts: list[str] = []
    truth: list[int] = []
    excluded: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for text, raw in zip(table[text_col], table[label_col], strict=True):
        first = str(raw).split(",")[0].strip()
        label = _model_label(first, CANONICAL_EMOTIONS)
        if label is None:
            excluded[first] += 1
        elif not isinstance(text, str) or not text.strip():
            errors["empty_text"] += 1
        else:
            texts.append(text)
            truth.append(CANONICAL_EMOTIONS.index(label))
    text_model = create_text_emotion(model)
    predicted = [
        CANONICAL_EMOTIONS.index(p.emotion.label)
        for i in range(0, len(texts), batch_size)
        for p in text_model.predict(texts[i : i + batch_size], explain=False)
    ]
    return _report(
        "text-emotion", text_model.name, str(csv_path), truth, predicted, excluded=dict(excluded), errors=dict(errors)
    )


SAFETY_LABELS = ("crisis", "none")
#: Between the earlier messages of a safety CSV's optional ``history`` column.
HISTORY_SEPARATOR = " || "


def _safety_rows(csv_path: Path) -> list[tuple[int, str, str, tuple[str, ...]]]:
    """(line, text, label, history) of a ``text,label[,history]`` CSV (``history``: the user's earlier messages,
    oldest first, joined by ``HISTORY_SEPARATOR``; none when the column is absent or empty); any problem is a
    ``MediaError`` naming the file (and line)."""
    import csv

    if not csv_path.is_file():
        raise MediaError(str(csv_path), "file not found")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames
            if not columns:
                raise MediaError(str(csv_path), "empty file (expected a header with the columns text,label)")
            missing = [c for c in ("text", "label") if c not in columns]
            if missing:
                raise MediaError(str(csv_path), f"no column {missing[0]!r}; columns: {', '.join(columns)}")
            rows = []
            for row in reader:
                line = reader.line_num
                text, label = (row.get("text") or "").strip(), (row.get("label") or "").strip().lower()
                if label not in SAFETY_LABELS:
                    raise MediaError(
                        str(csv_path), f"line {line}: unknown label {label!r} (valid: {', '.join(SAFETY_LABELS)})"
                    )
                if not text:
                    raise MediaError(str(csv_path), f"line {line}: empty text")
                earlier = tuple(t.strip() for t in (row.get("history") or "").split(HISTORY_SEPARATOR.strip()))
                rows.append((line, text, label, tuple(t for t in earlier if t)))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MediaError(str(csv_path), f"not a readable CSV ({exc})") from exc
    if not rows:
        raise MediaError(str(csv_path), "no rows under the header")
    return rows


#: ``affectlens eval safety --model``: the default detector (patterns and meaning) or the patterns alone.
SAFETY_DETECTORS: Final[tuple[str, ...]] = ("safety-patterns+meaning", "safety-patterns")


def evaluate_safety(
    csv_path: str | Path, limit: int | None = None, model: str | None = None, detector: RiskDetector | None = None
) -> dict[str, Any]:
    """Score ``fusion.safety.RiskDetector`` on a CSV with the columns ``text`` and ``label`` (``crisis`` or
    ``none``), and optionally ``history`` (the user's earlier messages in the conversation, oldest first, joined by
    ``HISTORY_SEPARATOR``): recall, precision, F1 and accuracy for ``crisis``, the confusion counts, and every
    misclassified text. A message counts as read as a crisis when the assistant answers it with crisis support
    (``fusion.safety.crisis_support``: a crisis now, or the follow-up after an earlier turn's disclosure); any
    other ``concern`` counts as ``none`` (how many of each label came out ``concern`` is reported).

    ``model``: one of ``SAFETY_DETECTORS`` (default: the first, patterns and the semantic reader); ``detector``
    replaces it (e.g. one with a semantic model being trained)."""
    from fusion.safety import RiskDetector, crisis_support

    csv_path = Path(csv_path)
    rows = _safety_rows(csv_path)[:limit]
    if detector is None:
        if model not in (None, *SAFETY_DETECTORS):
            raise ValueError(f"unknown safety detector {model!r}; valid: {', '.join(SAFETY_DETECTORS)}")
        detector = RiskDetector(semantic=model != "safety-patterns")
    counts: Counter[str] = Counter()
    concern: Counter[str] = Counter()
    misclassified: list[dict[str, Any]] = []
    for line, text, label, history in rows:
        risk = detector.assess(text, history)
        predicted = "crisis" if crisis_support(risk) else "none"
        counts[{("crisis", "crisis"): "tp", ("none", "crisis"): "fp", ("crisis", "none"): "fn"}.get(
            (label, predicted), "tn")] += 1  # fmt: skip
        if risk.level == "concern" and predicted == "none":
            concern["positives" if label == "crisis" else "negatives"] += 1
        if predicted != label:
            miss = {"line": line, "text": text, "label": label, "predicted": predicted, "level": risk.level,
                    "why": risk.why}  # fmt: skip
            misclassified.append({**miss, "history": list(history)} if history else miss)
    tp, fp, fn, tn = (counts[k] for k in ("tp", "fp", "fn", "tn"))
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "task": "safety",
        "model": detector.name,
        "data": str(csv_path),
        "n": len(rows),
        "with_history": sum(1 for row in rows if row[3]),
        "recall": round(recall, 4),
        "precision": round(precision, 4),
        "f1": round(f1, 4),
        "accuracy": round((tp + tn) / len(rows), 4),
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "concern": {"negatives": concern["negatives"], "positives": concern["positives"]},
        "misclassified": misclassified,
    }


def evaluate_strategy(
    data: str | Path,
    limit: int | None = None,
    model_dir: str | Path | None = None,
    planner: StrategyPlanner | None = None,
) -> dict[str, Any]:
    """Score the support-strategy planner on an ESConv JSONL file (its first ``limit`` dialogues): every supporter
    message with a strategy after the seeker has spoken, as ``scripts/train_strategy_planner.py`` scores it.

    Reports top-1 accuracy, macro-F1, how often any chosen strategy is the reference, the repetition rate (the first
    message of a supporter turn re-using a strategy of the previous supporter turn) for the planner and for the
    human references, both strategy distributions, the majority-class baseline (the majority of this file's
    references) and the mean strategies per turn. ``planner`` replaces the shipped one (``model_dir``: its folder).

    ``turns``: the same planner scored per supporter turn (``fusion.esconv.score_turns``: the dialogue before the
    turn's first message -> the set of strategies the turn used; ``turn_top1_accuracy`` counts the top strategy as
    right when it is in the set), with the majority-class baseline at that level (the strategy in most of this file's
    turns) and the human references' repetition by the same measure.

    ``prediction`` (at both levels): the same scores for the planner's most likely strategy alone, before its
    decision rule discounts the previous turn's strategies and adds a second one (what strategy predictors in the
    literature report); the top-level figures are the decision rule's, the strategies a reply is planned with.
    """
    from affectlens.labels import ESCONV_STRATEGIES
    from fusion.esconv import (
        distribution,
        majority_strategy,
        read_dialogues,
        repetition_rate,
        score_strategies,
        score_turns,
        strategy_examples,
        turn_examples,
    )

    dialogues = read_dialogues(data, limit)
    examples = strategy_examples(dialogues)
    if not examples:
        raise MediaError(str(data), "no supporter message with a strategy after the seeker has spoken")
    if planner is None:
        from fusion.strategy import load_strategy_planner

        planner = load_strategy_planner(model_dir)
    contexts = [e.dialogue for e in examples]
    turns = turn_examples(dialogues)
    # a turn's first message is a message example with the same dialogue before it: the same choice
    known = {e.dialogue for e in examples if e.first}
    contexts += [t.dialogue for t in turns if t.dialogue not in known]
    probs = planner.batched_probabilities(contexts)
    decided = [[s for s, _ in c] for c in planner.decisions(probs, contexts)]
    top = [[ESCONV_STRATEGIES[int(p.argmax())]] for p in probs]
    row = {d: i for i, d in enumerate(contexts)}
    chosen = decided[: len(examples)]
    scores = score_strategies(chosen, examples)
    turn_scores = score_turns([decided[row[t.dialogue]] for t in turns], turns)
    top_scores = score_strategies(top[: len(examples)], examples)
    top_turns = score_turns([top[row[t.dialogue]] for t in turns], turns)
    turn_majority = majority_strategy([t.strategies for t in turns])
    turn_majority_scores = score_turns([[turn_majority]] * len(turns), turns)
    references = [e.strategy for e in examples]
    counts = Counter(references)
    majority = max(ESCONV_STRATEGIES, key=counts.__getitem__)  # ties: the first in label order
    return {
        "task": "strategy",
        "model": planner.name if model_dir is None else f"{planner.name}:{model_dir}",
        "data": str(data),
        "dialogues": len(dialogues),
        **{k: v for k, v in scores.items() if k not in ("predicted_distribution", "mean_strategies_per_turn")},
        "reference_repetition_rate": round(repetition_rate([[s] for s in references], examples), 4),
        "majority_class": {"strategy": majority, "accuracy": round(counts[majority] / len(references), 4)},
        "mean_strategies_per_turn": scores["mean_strategies_per_turn"],
        "predicted_distribution": scores["predicted_distribution"],
        "reference_distribution": distribution(references),
        "prediction": {k: top_scores[k] for k in ("accuracy", "macro_f1", "repetition_rate")},
        "turns": {
            **{k: v for k, v in turn_scores.items() if k != "predicted_distribution"},
            "prediction": {k: top_turns[k] for k in ("turn_top1_accuracy", "repetition_rate")},
            "reference_repetition_rate": score_turns([[t.strategies[0]] for t in turns], turns)["repetition_rate"],
            "majority_class": {
                "strategy": turn_majority,
                "turn_top1_accuracy": turn_majority_scores["turn_top1_accuracy"],
                "first_strategy_accuracy": turn_majority_scores["first_strategy_accuracy"],
            },
        },
    }


#: ``affectlens eval dialogue`` samples the first this-many supporter turns of each of the first this-many dialogues.
DIALOGUE_SAMPLE = (20, 3)

ConversationFactory = Callable[[Sequence["Message"]], "Conversation"]
"""history (the reference dialogue before the seeker's last message) -> a ``Conversation`` continuing it."""


def shipped_conversations(
    exemplars: str | Path | None = None, reply_lora: bool | str | Path = True, lm: bool = True
) -> ConversationFactory:
    """Conversations on the shipped models (loaded once, shared): each starts from the given history with a fresh
    affect tracker and emotional memory, as ``Conversation`` builds its default parts; the compact LM replies
    (``build_lm_responder``: the shipped reply LoRA unless ``reply_lora`` is False or another LoRA's folder,
    exemplars from the ESConv file ``exemplars``), or with ``lm`` False the default ``TemplateResponder``."""
    from affectlens.analyzer import Analyzer
    from affectlens.conversation import Conversation, TemplateResponder, build_lm_responder
    from fusion.affect_state import AffectTracker
    from fusion.memory import EmotionalMemory, shared_sentence_embedder
    from fusion.strategy import load_strategy_planner

    analyzer = Analyzer()
    planner = load_strategy_planner(text_model=analyzer.text)
    embed = shared_sentence_embedder()  # the memory's, the exemplar bank's and the safety reader's
    responder = (
        build_lm_responder(exemplars=exemplars, reply_lora=reply_lora, embed=embed) if lm else TemplateResponder()
    )

    def new(history: Sequence[Message]) -> Conversation:
        return Conversation(
            analyzer=analyzer, planner=planner, responder=responder, tracker=AffectTracker(),
            memory=EmotionalMemory(embed), dialogue=list(history),
        )  # fmt: skip

    return new


def evaluate_dialogue(
    data: str | Path,
    limit: int = DIALOGUE_SAMPLE[0],
    turns_per_dialogue: int = DIALOGUE_SAMPLE[1],
    conversations: ConversationFactory | None = None,
    examples: int = 3,
    exemplars: str | Path | None = None,
    reply_lora: bool | str | Path = True,
) -> dict[str, Any]:
    """Reply quality on an ESConv JSONL file: for the first ``turns_per_dialogue`` supporter turns answering the
    seeker in each of the first ``limit`` dialogues, a ``Conversation`` continues the reference history, is sent the
    seeker's message, and its reply is compared with the supporter's reference message.

    Reports BLEU-2 (corpus), ROUGE-L F1 (mean) and Distinct-1/2 of the replies, the same for the tree's template
    reply of each turn (the baseline) and Distinct-1/2 of the references; mean and p90 seconds per turn (a first,
    warm-up turn is not counted), how many replies came from the LM, the template or the safety module, why the
    responder's replies were refused (``refusals``: turns per kind of problem), and the first ``examples`` samples
    (``examples`` < 0: every turn). ``conversations`` replaces ``shipped_conversations(exemplars, reply_lora)`` (tests
    inject tiny parts); ``exemplars`` must not be the file scored (its own references would be retrieved).
    """
    from affectlens.text_metrics import distinct_n, text_scores
    from fusion.esconv import read_dialogues, reply_samples

    if limit < 1 or turns_per_dialogue < 1:
        raise ValueError("--limit and --turns-per-dialogue must be at least 1")
    samples = reply_samples(read_dialogues(data, limit), turns_per_dialogue)
    if not samples:
        raise MediaError(str(data), "no supporter message answering a seeker message")
    if exemplars is not None and Path(exemplars).resolve() == Path(data).resolve():
        raise MediaError(str(exemplars), "is the file being scored: its references would come back as exemplars")
    new = conversations or shipped_conversations(exemplars, reply_lora)
    new(samples[0].history).send(samples[0].seeker)  # warm-up: lazy model loads are not reply latency
    replies, templates, seconds, rows = [], [], [], []
    sources: Counter[str] = Counter()
    refusals: Counter[str] = Counter()  # why LM replies were refused (a turn counts once per kind)
    model = ""
    for sample in samples:
        chat = new(sample.history)
        turn = chat.send(sample.seeker)
        model = model or (chat.responder.name if chat.responder else "")
        replies.append(turn.reply)
        templates.append(turn.tree.reply.text or "")
        seconds.append(turn.seconds)
        sources[turn.reply_source.split(":")[0]] += 1
        refusals.update({problem.split(":")[0].split(" (")[0] for problem in turn.refused})
        rows.append(
            {"dialogue": sample.dialogue, "seeker": sample.seeker, "reference": sample.reference, "reply": turn.reply,
             "source": turn.reply_source, "template": templates[-1], "refused": list(turn.refused),
             "seconds": round(turn.seconds, 3)}
        )  # fmt: skip
    references = [s.reference for s in samples]
    return {
        "task": "dialogue",
        "model": model,
        "data": str(data),
        "exemplars": None if exemplars is None else str(exemplars),
        "reply_lora": (
            None if conversations or reply_lora is False else "shipped" if reply_lora is True else str(reply_lora)
        ),
        "dialogues": len({s.dialogue for s in samples}),
        "n": len(samples),
        "reply": text_scores(replies, references),
        "template_baseline": text_scores(templates, references),
        "references": {f"distinct_{n}": round(distinct_n(references, n), 4) for n in (1, 2)},
        "latency_seconds": {
            "mean": round(float(np.mean(seconds)), 3),
            "p90": round(float(np.percentile(seconds, 90)), 3),
        },
        "reply_sources": dict(sources.most_common()),
        "refusals": dict(refusals.most_common()),
        "examples": rows if examples < 0 else rows[:examples],
    }
