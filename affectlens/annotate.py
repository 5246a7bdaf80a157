"""Batch annotation (``affectlens annotate``): many videos and audio files in, one resumable output folder out.

Each input gets ``OUT/<video-id>/`` (``video_id``: the file's stem and a short hash of its absolute path) with
three tables, ``faces``, ``utterances`` and ``timeline`` (Parquet, CSV or JSON lines); ``OUT/manifest.json``
records the settings, software, models and weights and, per input, its sha256, status and outputs;
``OUT/errors.jsonl`` lists the inputs that failed and why (rewritten from the manifest).

Nothing is lost when a run dies (kill -9, full disk, power cut): every file is written to a temporary name in
its folder, fsynced and renamed over the old one, and the manifest is rewritten the same way after each input.
An input counts as done only when its manifest entry says ``done``, its sha256 still matches and its outputs
exist, so running the same command again skips the done inputs and redoes the rest.

Each utterance is given to the face track that speaks it (``speaker_track``, ``<NA>`` when unknown, e.g. an
off-screen narrator; ``affectlens.speaker``: mouth movement inside the utterance against the same face's
silence). A timeline segment's ``utterances`` are those its track speaks; ``heard_utterances`` keeps every
utterance overlapping it in time, whoever speaks (what the face reacts to).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import io
import json
import logging
import math
import os
import platform
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from affectlens import __version__
from affectlens.errors import AffectLensError, MediaError, WeightsError
from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.speaker import mouth_openings, with_speakers
from affectlens.types import AU_COLUMNS, AnalysisResult

if TYPE_CHECKING:
    import pandas as pd

    from affectlens.analyzer import Analyzer

logger = logging.getLogger(__name__)

Format = Literal["parquet", "csv", "jsonl"]
Modality = Literal["face", "voice"]
#: Where the work runs: this machine, or a Ray cluster (``affectlens/annotate_ray.py``); same jobs, same records.
Engine = Literal["local", "ray"]
FORMATS: tuple[str, ...] = get_args(Format)
MODALITIES: tuple[str, ...] = get_args(Modality)
ENGINES: tuple[str, ...] = get_args(Engine)
TABLES = ("faces", "utterances", "timeline")

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
MANIFEST_VERSION = 1
#: ``"module:function"`` returning an ``Analyzer``; replaces the default one (tests, custom pipelines).
ANALYZER_ENV = "AFFECTLENS_ANNOTATE_ANALYZER"
#: Files taken from folders (a file named on the command line is judged by its content instead).
MEDIA_SUFFIXES = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts", ".mts", ".3gp",
        ".ogv", ".gif", ".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif",
    }
)  # fmt: skip
_TMP_MARK = ".tmp-"
_CHUNK = 1 << 20


class AnnotateError(AffectLensError):
    """The run as a whole cannot go on (unusable output folder, settings that clash with it, no analyzer)."""


@dataclass(frozen=True)
class AnnotateSettings:
    """What a run computes (``fps``, ``modalities``, ``min_segment``, ``format``) and how (``workers``, ``engine``).

    ``fps`` is frames analysed per second of video; ``min_segment`` the seconds a new smoothed label must last
    before the timeline cuts a segment for it. ``ray_address`` is the cluster of ``engine="ray"`` (``None``:
    ``$RAY_ADDRESS``, else a local Ray instance).
    """

    fps: float = 5.0
    modalities: tuple[Modality, ...] = ("face", "voice")
    format: Format = "parquet"
    min_segment: float = 0.5
    #: Write ``<video-id>/report.html`` per input and ``index.html`` (``affectlens.report``); tables unchanged.
    report: bool = True
    workers: int = 1
    engine: Engine = "local"
    ray_address: str | None = None
    #: Privacy: blur the faces in the report's key-frame thumbnails (the only media an annotate run writes).
    blur_faces: bool = False

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not self.modalities or any(m not in MODALITIES for m in self.modalities):
            raise ValueError(f"modalities must be a non-empty subset of {', '.join(MODALITIES)}; got {self.modalities}")
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; available: {', '.join(ENGINES)}")
        if self.ray_address and self.engine != "ray":
            raise ValueError(f"a Ray address ({self.ray_address}) needs engine 'ray', not {self.engine!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.min_segment < 0:
            raise ValueError(f"min_segment must be >= 0, got {self.min_segment}")

    def result_settings(self) -> dict[str, Any]:
        """The settings that change the outputs: an output folder keeps one set of them."""
        return {
            "fps": self.fps,
            "modalities": sorted(self.modalities),
            "format": self.format,
            "min_segment": self.min_segment,
            **({"blur_faces": True} if self.blur_faces else {}),  # absent when off: older outputs stay resumable
        }


def parse_modalities(spec: str) -> tuple[Modality, ...]:
    """``"face,voice"`` -> ``("face", "voice")``; an unknown name raises ``ValueError`` listing the valid ones."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    bad = [n for n in names if n not in MODALITIES]
    if bad or not names:
        raise ValueError(f"unknown modality {', '.join(bad) or spec!r}; choose from {', '.join(MODALITIES)}")
    return tuple(dict.fromkeys(names))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class InputProblem:
    """An input that names no usable file (missing path, empty list file...)."""

    path: str
    reason: str


def collect_inputs(
    inputs: Iterable[str | os.PathLike[str]], exclude: Path | None = None
) -> tuple[list[Path], list[InputProblem]]:
    """Expand the command line's inputs into files, in order and without duplicates.

    A folder is searched recursively for files with a media suffix (``MEDIA_SUFFIXES``; hidden names and
    ``exclude``, the output folder, are skipped); a ``.txt`` file lists paths (files or folders) one per line,
    relative to the list's folder, ``#`` starting a comment; any other path is taken as it is and judged by
    its content later. Paths that do not exist come back as problems.
    """
    files: list[Path] = []
    problems: list[InputProblem] = []
    seen: set[Path] = set()
    skip = exclude.resolve() if exclude is not None else None

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path.absolute())

    def expand(path: Path, listed: bool) -> None:
        if path.is_dir():
            found = list(_walk_media(path, skip))
            if not found:
                problems.append(InputProblem(str(path), "folder holds no video or audio files"))
            for file in found:
                add(file)
        elif path.suffix.lower() == ".txt" and not listed and path.is_file():
            for entry in _read_list(path, problems):
                expand(entry, listed=True)
        elif not path.exists() and not path.is_symlink():
            problems.append(InputProblem(str(path), "file not found"))
        else:
            add(path)  # unreadable, broken links, non-media: recorded as failed when analysed

    for item in inputs:
        expand(Path(item), listed=False)
    return files, problems


def _walk_media(folder: Path, skip: Path | None) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (skip is None or (here / d).resolve() != skip))
        for name in sorted(names):
            if not name.startswith(".") and Path(name).suffix.lower() in MEDIA_SUFFIXES:
                yield here / name


def _read_list(path: Path, problems: list[InputProblem]) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(InputProblem(str(path), f"cannot read the list of inputs ({exc})"))
        return []
    entries = [line.split("#", 1)[0].strip() for line in lines]
    listed = [path.parent / Path(entry).expanduser() for entry in entries if entry]
    if not listed:
        problems.append(InputProblem(str(path), "the list of inputs is empty"))
    return listed


def video_id(path: str | os.PathLike[str]) -> str:
    """``<stem>-<8 hex of sha1(absolute path)>``: files of the same name in different folders do not collide."""
    absolute = str(Path(path).absolute())
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(absolute).stem).strip("._")[:60] or "input"
    return f"{stem}-{hashlib.sha1(absolute.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def file_checksum(path: Path) -> tuple[int, str]:
    """Size in bytes and sha256 of a regular file; ``MediaError`` naming the file when it cannot be read."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise MediaError(str(path), "not a regular file")
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        raise MediaError(str(path), "file not found (or a broken symbolic link)") from None
    except PermissionError:
        raise MediaError(str(path), "permission denied") from None
    except OSError as exc:
        raise MediaError(str(path), f"cannot read the file ({exc.strerror or exc})") from None
    return info.st_size, digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Tables: one schema each, so empty tables keep their columns and every format reads back the same.

_PROBS = {e: "float64" for e in CANONICAL_EMOTIONS}
_AUS = {au: "float64" for au in AU_COLUMNS}
FACE_COLUMNS: dict[str, str] = {
    "video": "string", "time": "float64", "frame": "int64", "face": "int64", "track": "Int64",
    "x1": "float64", "y1": "float64", "x2": "float64", "y2": "float64", "detection_score": "float64",
    "quality": "float64", "label": "string", "confidence": "float64", "valence": "float64", "arousal": "float64",
    **_PROBS, **_AUS,
    "yaw": "float64", "pitch": "float64", "roll": "float64", "gaze_yaw": "float64", "gaze_pitch": "float64",
    "state": "string", "smoothed_confidence": "float64", "eyes_closed": "boolean", "au_reference": "string",
    "mouth_open": "float64",
}  # fmt: skip
UTTERANCE_COLUMNS: dict[str, str] = {
    "video": "string", "utterance": "int64", "start": "float64", "end": "float64", "text": "string",
    "speech_label": "string", "speech_confidence": "float64", "speech_valence": "float64",
    "speech_arousal": "float64", "text_label": "string", "text_confidence": "float64",
    "pitch_mean": "float64", "pitch_range": "float64", "energy": "float64", "speaking_rate": "float64",
    "pause_ratio": "float64", "speaker_track": "Int64", "speaker_score": "float64",
}  # fmt: skip
TIMELINE_COLUMNS: dict[str, str] = {
    "video": "string", "track": "int64", "segment": "int64", "start": "float64", "end": "float64",
    "label": "string", "confidence": "float64", "frames": "int64", "utterances": "string",
    "transcript": "string", "voice_label": "string", "heard_utterances": "string",
}  # fmt: skip
SCHEMAS: dict[str, dict[str, str]] = {
    "faces": FACE_COLUMNS,
    "utterances": UTTERANCE_COLUMNS,
    "timeline": TIMELINE_COLUMNS,
}


def _frame(rows: list[dict[str, Any]], schema: Mapping[str, str]) -> pd.DataFrame:
    import pandas as pd

    return typed(pd.DataFrame(rows, columns=list(schema)), schema)


def typed(df: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """``df`` with exactly ``schema``'s columns, in order, cast to its dtypes (missing columns are an error)."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"table lacks the columns {', '.join(missing)}")
    out = df.loc[:, list(schema)].copy()
    for column, dtype in schema.items():
        if dtype == "string":  # None, NaN and pd.NA are all "missing"; everything else is text
            out[column] = out[column].astype(object).where(out[column].notna(), None).astype("string")
        else:
            out[column] = out[column].astype(dtype)
    return out.reset_index(drop=True)


def faces_table(result: AnalysisResult, video: str, mouths: Sequence[float | None] | None = None) -> pd.DataFrame:
    """One row per face per analysed frame (``FACE_COLUMNS``); ``state`` is the smoothed label or ``uncertain``.

    ``mouth_open`` is the inner-lip gap in interocular units from the face mesh (``speaker.mouth_openings``):
    ``mouths`` when given (one per face, in order: measured as frames arrived, when the result keeps no
    meshes), else measured from the result's meshes.
    """
    rows = []
    for frame in result.frames:
        for face in frame.faces:
            expr, pose, gaze, aus = face.expression, face.pose, face.gaze, face.aus or {}
            x1, y1, x2, y2 = face.box
            rows.append(
                {
                    "video": video, "time": frame.time, "frame": frame.index, "face": face.index,
                    "track": face.track_id, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                    "detection_score": face.detection_score, "quality": face.quality.score, "label": expr.label,
                    "confidence": expr.confidence, "valence": expr.valence, "arousal": expr.arousal,
                    **{e: expr.probabilities[e] for e in CANONICAL_EMOTIONS},
                    **{au: aus.get(au) for au in AU_COLUMNS},
                    "yaw": pose and pose.yaw, "pitch": pose and pose.pitch, "roll": pose and pose.roll,
                    "gaze_yaw": gaze and gaze.yaw, "gaze_pitch": gaze and gaze.pitch, "state": face.state,
                    "smoothed_confidence": None if face.smoothed is None else face.smoothed.confidence,
                    "eyes_closed": face.eyes_closed, "au_reference": face.au_reference,
                }
            )  # fmt: skip
    if mouths is None:
        mouths = mouth_openings([face.landmarks for frame in result.frames for face in frame.faces])
    for row, mouth in zip(rows, mouths, strict=True):
        row["mouth_open"] = mouth
    return _frame(rows, FACE_COLUMNS)


def utterances_table(
    result: AnalysisResult, video: str, faces: pd.DataFrame | None = None, step: float | None = None
) -> pd.DataFrame:
    """One row per utterance (``UTTERANCE_COLUMNS``); an empty transcript is missing (``<NA>``).

    Given the input's ``faces`` table and ``step`` (seconds between analysed frames), ``speaker_track`` is the
    face track that speaks the utterance (``<NA>``: unknown) and ``speaker_score`` the best track's evidence
    (``affectlens.speaker.assign_speakers``); without them both are missing.
    """
    rows = []
    for utt in result.utterances:
        voice, words, prosody = utt.speech_emotion, utt.text_emotion, utt.prosody
        rows.append(
            {
                "video": video, "utterance": utt.index, "start": utt.start, "end": utt.end, "text": utt.text or None,
                "speech_label": voice and voice.label, "speech_confidence": voice and voice.confidence,
                "speech_valence": voice and voice.valence, "speech_arousal": voice and voice.arousal,
                "text_label": words and words.emotion.label, "text_confidence": words and words.emotion.confidence,
                "pitch_mean": prosody and prosody.pitch_mean, "pitch_range": prosody and prosody.pitch_range,
                "energy": prosody and prosody.energy, "speaking_rate": prosody and prosody.speaking_rate,
                "pause_ratio": prosody and prosody.pause_ratio,
            }
        )  # fmt: skip
    table = _frame(rows, UTTERANCE_COLUMNS)
    return table if faces is None or step is None else typed(with_speakers(table, faces, step), UTTERANCE_COLUMNS)


@dataclass
class _Run:
    """Consecutive frames of one track with one state."""

    label: str
    start: float
    last: float
    confidences: list[float] = field(default_factory=list)
    #: Where the track was lost before this run (a segment never spans a gap).
    after_gap: bool = False


def build_timeline(
    faces: pd.DataFrame, utterances: pd.DataFrame, step: float, min_segment: float = 0.5, video: str | None = None
) -> pd.DataFrame:
    """Per face track, segments of one smoothed state (``TIMELINE_COLUMNS``), with the utterances they overlap.

    ``faces`` and ``utterances`` are ``faces_table`` / ``utterances_table`` frames; ``step`` is the seconds
    between analysed frames. A new state starts a segment only when it lasts ``min_segment`` seconds or more
    (hysteresis: shorter flickers join the segment they interrupt; a short first run joins the next segment).
    A track unseen for more than 2.5 ``step`` ends its segment. A segment runs from its first frame to the
    next segment's first frame, or one ``step`` past its last frame. ``confidence`` is the mean smoothed
    confidence of its frames; ``utterances`` the comma-separated indices of the utterances overlapping it that
    its track speaks (``utterances``' ``speaker_track``), ``transcript`` their text joined with " | " and
    ``voice_label`` the speech emotion of the one overlapping most; ``heard_utterances`` the indices of every
    utterance overlapping it, whoever speaks (the time-only join).
    """
    rows: list[dict[str, Any]] = []
    eps = 1e-6
    known = faces[faces["track"].notna() & faces["state"].notna()]
    for track, group in known.sort_values(["track", "time"], kind="stable").groupby("track", sort=True):
        runs: list[_Run] = []
        previous: float | None = None
        for t, state, conf in zip(group["time"], group["state"], group["smoothed_confidence"], strict=True):
            gap = previous is not None and t - previous > 2.5 * step + eps
            if runs and not gap and runs[-1].label == state:
                runs[-1].last = t
            else:
                runs.append(_Run(str(state), float(t), float(t), after_gap=gap))
            runs[-1].confidences.append(float(conf))
            previous = t
        segments = _merge_runs(runs, step, min_segment)
        for k, seg in enumerate(segments):
            nxt = segments[k + 1] if k + 1 < len(segments) else None
            end = nxt.start if nxt is not None and not nxt.after_gap else seg.last + step
            rows.append(
                {
                    "video": video if video is not None else group["video"].iloc[0],
                    "track": int(track), "segment": k, "start": seg.start, "end": end, "label": seg.label,
                    "confidence": float(sum(seg.confidences) / len(seg.confidences)), "frames": len(seg.confidences),
                    **_overlapping(utterances, seg.start, end, int(track)),
                }
            )  # fmt: skip
    return _frame(rows, TIMELINE_COLUMNS)


def _run_length(runs: list[_Run], k: int, step: float) -> float:
    nxt = runs[k + 1] if k + 1 < len(runs) else None
    return (nxt.start if nxt is not None and not nxt.after_gap else runs[k].last + step) - runs[k].start


def _merge_runs(runs: list[_Run], step: float, min_segment: float) -> list[_Run]:
    segments: list[_Run] = []
    eps = 1e-6
    for k, run in enumerate(runs):
        short = _run_length(runs, k, step) < min_segment - eps
        if segments and not run.after_gap and (short or run.label == segments[-1].label):
            segments[-1].last = run.last
            segments[-1].confidences += run.confidences
        else:
            segments.append(_Run(run.label, run.start, run.last, list(run.confidences), run.after_gap))
    # A short first segment (a flicker before the track settles) joins the one after it.
    if len(segments) > 1 and not segments[1].after_gap:
        first_length = segments[1].start - segments[0].start
        if first_length < min_segment - eps:
            first, second = segments[0], segments.pop(1)
            segments[0] = _Run(second.label, first.start, second.last, first.confidences + second.confidences)
    return segments


def _overlapping(utterances: pd.DataFrame, start: float, end: float, track: int) -> dict[str, Any]:
    import pandas as pd

    heard = utterances[(utterances["start"] < end) & (utterances["end"] > start)]
    hits = heard[heard["speaker_track"].eq(track).fillna(False).astype(bool)]
    indices = ",".join(str(int(i)) for i in heard["utterance"]) or None
    if hits.empty:
        return {"utterances": None, "transcript": None, "voice_label": None, "heard_utterances": indices}
    overlap = hits["end"].clip(upper=end) - hits["start"].clip(lower=start)
    best = hits["speech_label"].iloc[int(overlap.to_numpy().argmax())]
    return {
        "utterances": ",".join(str(int(i)) for i in hits["utterance"]),
        "transcript": " | ".join(str(t) for t in hits["text"].dropna()) or None,
        "voice_label": None if pd.isna(best) else str(best),
        "heard_utterances": indices,
    }


# --------------------------------------------------------------------------------------------------
# Files: written atomically, read back with their schema.


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or file system can fsync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it holds the old content or the new, never a mix or a torn file."""
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def encode_table(df: pd.DataFrame, fmt: Format) -> bytes:
    """A table as the bytes of a Parquet, CSV or JSON-lines file (floats kept exactly in every format)."""
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    if fmt == "csv":
        return df.to_csv(index=False, na_rep="").encode("utf-8")
    records = df.astype(object).where(df.notna(), None).to_dict(orient="records")
    return "".join(json.dumps(r, default=_json_default, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def read_table(path: Path, schema: Mapping[str, str]) -> pd.DataFrame:
    """Read a table written by ``encode_table`` (the format from the suffix) back with its dtypes."""
    import pandas as pd

    fmt = path.suffix.lstrip(".")
    if fmt == "parquet":
        df = pd.read_parquet(path)
    elif fmt == "csv":
        df = pd.read_csv(path, dtype=dict(schema), keep_default_na=False, na_values=[""])
    elif fmt == "jsonl":
        with path.open(encoding="utf-8") as fh:
            df = pd.DataFrame([json.loads(line) for line in fh if line.strip()], columns=list(schema))
    else:
        raise ValueError(f"{path}: unknown table format {fmt!r}")
    return typed(df, schema)


# --------------------------------------------------------------------------------------------------
# One input -> its record (runs in the parent or in a worker process).


@dataclass(frozen=True)
class Job:
    """One input to annotate: its id, absolute path and the checksum the parent computed."""

    video: str
    path: str
    size: int
    sha256: str


class _Progress:
    """tqdm bars over inputs and over the frames of the current video, on stderr; no-ops when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self._frames: Any = None
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="file", desc="annotate", dynamic_ncols=True)

    def start_video(self, name: str, frames: int | None) -> None:
        if self.enabled:
            from tqdm import tqdm

            self._frames = tqdm(total=frames, unit="frame", desc=name[:30], leave=False, position=1, dynamic_ncols=True)

    def frame(self, *_: object) -> None:
        if self._frames is not None:
            self._frames.update(1)

    def end_video(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._frames is not None:  # not end_video(): that counts one more file done (2/1 on the bar)
            self._frames.close()
            self._frames = None
        if self._bar is not None:
            self._bar.close()


def _analyze(
    analyzer: Analyzer, job: Job, settings: AnnotateSettings, progress: _Progress | None, mouths: list[float | None]
) -> AnalysisResult:
    """Analyse one input. For videos, the meshes are measured (``mouths``, one per face in order) as frames
    arrive and not kept, so memory stays flat however long the video is."""
    from perception.media import has_audio_stream, open_media

    kind, _, info = open_media(job.path, analyzer.limits)
    voice = "voice" in settings.modalities
    if kind == "image":
        raise MediaError(job.path, "an image, not a video or audio file (use `affectlens analyze` for images)")
    if kind == "audio" or "face" not in settings.modalities:
        if not voice:
            raise MediaError(job.path, "audio only, and the voice modality is off: nothing to annotate")
        if kind == "video" and not has_audio_stream(job.path):
            raise MediaError(job.path, "no sound track, and the face modality is off: nothing to annotate")
        return analyzer.analyze_audio(job.path)
    if progress is not None:
        duration = info.duration if info is not None else None
        progress.start_video(Path(job.path).name, math.ceil(duration * settings.fps) if duration else None)

    def on_frame(frame: Any, result: Any) -> None:
        mouths.extend(mouth_openings([face.landmarks for face in result.faces]))
        if progress is not None:
            progress.frame()

    result = analyzer.analyze_video(job.path, fps=settings.fps, on_frame=on_frame, audio=voice, keep_landmarks=False)
    if voice and not has_audio_stream(job.path):
        result = _with_warning(result, f"{job.path}: no sound track; the utterances table is empty")
    return result


def _with_warning(result: AnalysisResult, warning: str) -> AnalysisResult:
    from dataclasses import replace

    return replace(result, warnings=(*result.warnings, warning))


def annotate_one(
    analyzer: Analyzer, job: Job, out: Path, settings: AnnotateSettings, progress: _Progress | None = None
) -> dict[str, Any]:
    """Analyse one input and write its three tables into ``out/<video-id>/``; returns its manifest entry.

    Bad input (``MediaError``), a failed write (``OSError``, e.g. a full disk) or an unexpected error in a
    model give a ``failed`` entry with the reason; missing weights (``WeightsError``) stop the run.
    """
    started = time.perf_counter()
    entry: dict[str, Any] = {"input": job.path, "size": job.size, "sha256": job.sha256, "affectlens": __version__}
    try:
        mouths: list[float | None] = []
        result = _analyze(analyzer, job, settings, progress, mouths)
    except MediaError as exc:
        return {**entry, "status": "failed", "reason": str(exc)}
    except (WeightsError, ImportError):
        raise
    except Exception as exc:
        logger.exception("%s: analysis failed", job.path)
        return {**entry, "status": "failed", "reason": f"{job.path}: analysis failed ({type(exc).__name__}: {exc})"}
    faces = faces_table(result, job.video, mouths if result.kind == "video" else None)
    utterances = utterances_table(result, job.video, faces, 1.0 / settings.fps)
    timeline = build_timeline(faces, utterances, 1.0 / settings.fps, settings.min_segment, job.video)
    folder = out / job.video
    outputs: dict[str, dict[str, Any]] = {}
    for name, table in zip(TABLES, (faces, utterances, timeline), strict=True):
        target = folder / f"{name}.{settings.format}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, encode_table(table, settings.format))
        except OSError as exc:  # a full disk, a read-only folder: this input fails, the run goes on
            return {**entry, "status": "failed", "reason": f"{target}: could not write ({exc.strerror or exc})"}
        outputs[name] = {"file": f"{job.video}/{target.name}", "rows": len(table)}
    done = {
        **entry,
        "status": "done",
        "kind": result.kind,
        "duration": result.duration,
        "frames": len(result.frames),
        "outputs": outputs,
        "models": dict(result.models),
        "weights": dict(result.weights),
        "warnings": list(result.warnings),
        "seconds": round(time.perf_counter() - started, 3),
        "finished": _now(),
    }
    if settings.report:
        tables = dict(zip(TABLES, (faces, utterances, timeline), strict=True))
        _write_report(done, folder, tables, settings.fps, settings.blur_faces)
    return done


def _write_report(
    entry: dict[str, Any], folder: Path, tables: dict[str, pd.DataFrame], fps: float, blur_faces: bool = False
) -> None:
    """Add the input's HTML report (``affectlens.report``) to ``entry``; a failure only adds a warning."""
    try:
        from affectlens.report import write_video_report

        video = entry["input"] if entry.get("kind") == "video" else None
        entry["report"] = write_video_report(folder, tables, video, entry, fps=fps, blur_faces=blur_faces)
    except Exception as exc:  # the tables are safe on disk: a broken report never fails the input
        logger.exception("%s: could not write the report", folder)
        entry["warnings"].append(f"{folder / 'report.html'}: report not written ({type(exc).__name__}: {exc})")


def _write_index(out: Path, manifest: dict[str, Any]) -> None:
    """Rewrite ``out/index.html`` from the manifest; a failure is logged, the run's results stand."""
    try:
        from affectlens.report import write_index

        write_index(out, manifest)
    except Exception:
        logger.exception("%s: could not write index.html", out)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# The manifest: the one record of what OUT holds, rewritten atomically after every input.


class _Manifest:
    def __init__(self, out: Path, settings: AnnotateSettings) -> None:
        self.out = out
        self.path = out / MANIFEST
        self.unsaved = False
        wanted = settings.result_settings()
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise AnnotateError(f"{self.path}: unreadable manifest ({exc}); use a new output folder") from exc
            if data.get("settings") != wanted:
                raise AnnotateError(
                    f"{out}: was written with {data.get('settings')}, this run asks for {wanted}; "
                    "use another output folder (or the same settings to resume)"
                )
            self.data: dict[str, Any] = data
        else:
            self.data = {
                "manifest_version": MANIFEST_VERSION,
                "created": _now(),
                "settings": wanted,
                "runs": [],
                "models": {},
                "weights": {},
                "videos": {},
            }

    @property
    def videos(self) -> dict[str, dict[str, Any]]:
        return self.data["videos"]

    def start_run(self, settings: AnnotateSettings, inputs: int) -> None:
        self.data["affectlens"] = __version__
        self.data["runs"].append(
            {
                "started": _now(),
                "affectlens": __version__,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "engine": settings.engine,
                "workers": settings.workers,
                "inputs": inputs,
            }
        )
        self.save()

    def is_done(self, video: str, sha256: str) -> bool:
        entry = self.videos.get(video)
        if entry is None or entry.get("status") != "done" or entry.get("sha256") != sha256:
            return False
        return all((self.out / o["file"]).is_file() for o in entry.get("outputs", {}).values())

    def record(self, video: str, entry: dict[str, Any]) -> None:
        self.videos[video] = entry
        if entry["status"] == "done":
            self.data["models"].update(entry.get("models", {}))
            self.data["weights"].update(entry.get("weights", {}))
        self.save()

    def failures(self) -> list[dict[str, Any]]:
        return [
            {"video": vid, "path": e["input"], "reason": e.get("reason", "")}
            for vid, e in self.videos.items()
            if e.get("status") == "failed"
        ]

    def save(self) -> None:
        """Write the manifest, then ``errors.jsonl`` (its failed entries); on failure keep them for the next try."""
        self.data["updated"] = _now()
        errors = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.failures())
        try:
            _atomic_write(self.path, (json.dumps(self.data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
            _atomic_write(self.out / ERRORS, errors.encode("utf-8"))
        except OSError as exc:
            self.unsaved = True
            logger.error("%s: could not update the manifest (%s); will retry", self.path, exc.strerror or exc)
        else:
            self.unsaved = False


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` so that two runs never write one folder (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; run one annotate per folder
        yield
        return
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AnnotateError(f"{out}: another annotate run is writing to this folder") from None
            raise
        yield
    finally:
        os.close(fd)


def _remove_stale_temp_files(out: Path) -> None:
    for tmp in [*out.glob(f".*{_TMP_MARK}*"), *out.glob(f"*/.*{_TMP_MARK}*")]:
        with contextlib.suppress(OSError):
            tmp.unlink()
            logger.info("removed %s, left by an interrupted run", tmp)


# --------------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class AnnotateReport:
    """What a run did: input ids annotated now, ids already done (skipped) and ``(path, reason)`` failures."""

    output: Path
    done: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.failed


def default_analyzer() -> Analyzer:
    """The analyzer a run uses unless told otherwise (its parts load on first use)."""
    from affectlens.analyzer import Analyzer

    return Analyzer()


def analyzer_factory_from_env() -> Callable[[], Analyzer] | None:
    """The ``module:function`` named by ``$AFFECTLENS_ANNOTATE_ANALYZER``, or ``None`` when unset."""
    spec = os.environ.get(ANALYZER_ENV)
    if not spec:
        return None
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise AnnotateError(f"${ANALYZER_ENV}={spec!r}: cannot load it ({exc}); expected 'module:function'") from exc
    if not callable(factory):
        raise AnnotateError(f"${ANALYZER_ENV}={spec!r} is not callable")
    return factory


def annotate_files(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    settings: AnnotateSettings | None = None,
    *,
    analyzer: Analyzer | None = None,
    analyzer_factory: Callable[[], Analyzer] | None = None,
    progress: bool = False,
) -> AnnotateReport:
    """Annotate every video and audio file in ``inputs`` (files, folders, ``.txt`` lists) into ``output``.

    With one worker, ``analyzer`` (or one built by ``analyzer_factory``, else ``$AFFECTLENS_ANNOTATE_ANALYZER``,
    else the default) does the work; with ``settings.workers > 1`` each worker process builds its own from the
    factory, which must then be a module-level function. ``progress`` shows tqdm bars on stderr.
    """
    settings = settings or AnnotateSettings()
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise AnnotateError(f"{out}: the output exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnnotateError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc
    if settings.workers > 1 and analyzer is not None:
        raise AnnotateError("workers > 1 build their own analyzers: pass analyzer_factory, not an analyzer")
    factory = analyzer_factory or analyzer_factory_from_env() or default_analyzer
    with _locked(out):
        _remove_stale_temp_files(out)
        manifest = _Manifest(out, settings)
        files, problems = collect_inputs(inputs, exclude=out)
        manifest.start_run(settings, len(files) + len(problems))
        for problem in problems:
            where = str(Path(problem.path).absolute())
            manifest.record(
                video_id(where), {"input": where, "status": "failed", "reason": f"{where}: {problem.reason}"}
            )
        jobs, skipped = _plan(files, manifest)
        logger.info("%d input(s): %d to annotate, %d already done", len(files), len(jobs), len(skipped))
        bars = _Progress(len(files), progress)
        for _ in skipped:
            bars.end_video()
        try:
            with _logging_around_bars(progress):
                _ENGINES[settings.engine](jobs, out, settings, manifest, bars, analyzer, factory)
        finally:
            bars.close()
        if manifest.unsaved:
            manifest.save()
            if manifest.unsaved:
                raise AnnotateError(f"{manifest.path}: could not be written; the results of this run are not recorded")
        if settings.report:
            _write_index(out, manifest.data)
    done = tuple(j.video for j in jobs if manifest.videos.get(j.video, {}).get("status") == "done")
    failed = tuple((f["path"], f["reason"]) for f in manifest.failures() if f["video"] in _ids(files, problems))
    return AnnotateReport(out, done, tuple(skipped), failed)


def _logging_around_bars(progress: bool) -> contextlib.AbstractContextManager[Any]:
    """Log lines printed above the progress bars rather than through them."""
    if not progress:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def _ids(files: list[Path], problems: list[InputProblem]) -> set[str]:
    return {video_id(f) for f in files} | {video_id(Path(p.path).absolute()) for p in problems}


def _plan(files: list[Path], manifest: _Manifest) -> tuple[list[Job], list[str]]:
    """Checksum every file; the done ones are skipped, unreadable ones recorded as failed, the rest are jobs."""
    jobs: list[Job] = []
    skipped: list[str] = []
    for path in files:
        vid = video_id(path)
        try:
            size, sha = file_checksum(path)
        except MediaError as exc:
            manifest.record(vid, {"input": str(path), "status": "failed", "reason": str(exc)})
            continue
        if manifest.is_done(vid, sha):
            skipped.append(vid)
        else:
            jobs.append(Job(vid, str(path), size, sha))
    return jobs, skipped


def _run_local(
    jobs: list[Job],
    out: Path,
    settings: AnnotateSettings,
    manifest: _Manifest,
    bars: _Progress,
    analyzer: Analyzer | None,
    factory: Callable[[], Analyzer],
) -> None:
    """Run the jobs in this process (one worker) or a spawn process pool; only this process writes the manifest."""
    workers = min(settings.workers, max(1, len(jobs)))  # no idle processes for a few inputs
    if workers == 1:
        for job in jobs:
            if analyzer is None:
                analyzer = factory()
            entry = annotate_one(analyzer, job, out, settings, bars)
            manifest.record(job.video, entry)
            bars.end_video()
            _log_entry(entry)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(factory, settings, logging.getLogger().level, threads),
    )
    with pool:
        futures = {pool.submit(_worker_run, job, out): job for job in jobs}
        try:
            for future in as_completed(futures):
                job = futures[future]
                try:
                    entry = future.result()
                except BrokenProcessPool:
                    entry = {
                        "input": job.path, "size": job.size, "sha256": job.sha256, "status": "failed",
                        "reason": f"{job.path}: the worker process died (out of memory?)",
                    }  # fmt: skip
                manifest.record(job.video, entry)
                bars.end_video()
                _log_entry(entry)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_ray(*args: Any) -> None:
    """Run the jobs on a Ray cluster (``annotate_ray.run_ray``, imported only when asked for)."""
    from affectlens.annotate_ray import run_ray

    run_ray(*args)


#: Engines by name: each takes the same arguments and records every entry through ``manifest``.
_ENGINES: dict[str, Callable[..., None]] = {"local": _run_local, "ray": _run_ray}


def _log_entry(entry: dict[str, Any]) -> None:
    if entry["status"] == "done":
        logger.info("%s: done in %.1fs", entry["input"], entry["seconds"])
    else:
        logger.warning("%s", entry["reason"])


_WORKER: dict[str, Any] = {}


def _worker_init(factory: Callable[[], Analyzer], settings: AnnotateSettings, level: int, threads: int) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))  # workers share the cores instead of each taking them all
    _WORKER.update(factory=factory, settings=settings, threads=threads)


def _worker_run(job: Job, out: Path) -> dict[str, Any]:
    if "analyzer" not in _WORKER:
        with contextlib.suppress(ImportError):
            import torch

            torch.set_num_threads(_WORKER["threads"])
        _WORKER["analyzer"] = _WORKER["factory"]()
    return annotate_one(_WORKER["analyzer"], job, out, _WORKER["settings"])


# --------------------------------------------------------------------------------------------------
# Reading a finished folder


@dataclass(frozen=True)
class Annotations:
    """The tables of an output folder, concatenated over its done inputs (each row names its ``video``).

    ``errors`` has one row per failed input (``video``, ``path``, ``reason``); ``manifest`` is ``manifest.json``.
    """

    faces: pd.DataFrame
    utterances: pd.DataFrame
    timeline: pd.DataFrame
    errors: pd.DataFrame
    manifest: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        if name not in (*TABLES, "errors", "manifest"):
            raise KeyError(name)
        return getattr(self, name)


def load_annotations(output: str | os.PathLike[str]) -> Annotations:
    """Read ``affectlens annotate``'s output folder back as pandas DataFrames.

    Only inputs whose manifest entry is ``done`` are read; a table whose row count differs from the one the
    manifest recorded raises ``AnnotateError`` (the folder was changed after the run).
    """
    import pandas as pd

    out = Path(output)
    path = out / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotateError(f"{path}: not found; is {out} an `affectlens annotate` output folder?") from None
    except (OSError, ValueError) as exc:
        raise AnnotateError(f"{path}: unreadable manifest ({exc})") from exc
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for vid, entry in sorted(manifest.get("videos", {}).items()):
        if entry.get("status") != "done":
            continue
        for name in TABLES:
            info = entry["outputs"][name]
            try:
                table = read_table(out / info["file"], SCHEMAS[name])
            except (OSError, ValueError) as exc:
                raise AnnotateError(f"{out / info['file']}: cannot read the {name} table of {vid} ({exc})") from exc
            if len(table) != info["rows"]:
                raise AnnotateError(f"{out / info['file']}: {len(table)} rows, the manifest says {info['rows']}")
            tables[name].append(table)
    frames = {
        name: typed(pd.concat(parts, ignore_index=True), SCHEMAS[name]) if parts else _frame([], SCHEMAS[name])
        for name, parts in tables.items()
    }
    failed = [
        {"video": vid, "path": e.get("input"), "reason": e.get("reason")}
        for vid, e in sorted(manifest.get("videos", {}).items())
        if e.get("status") == "failed"
    ]
    errors = _frame(failed, {"video": "string", "path": "string", "reason": "string"})
    return Annotations(frames["faces"], frames["utterances"], frames["timeline"], errors, manifest)
