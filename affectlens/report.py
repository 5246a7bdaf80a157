"""HTML reports of an ``affectlens annotate`` output folder: one page per input and an index page.

``write_video_report`` turns one input's tables into ``OUT/<video-id>/report.html``, with PNG plots in ``plots/``
and a face crop per timeline segment in ``keyframes/``; ``write_index`` lists every input of ``OUT/manifest.json``
in ``OUT/index.html``. The pages use inline CSS and no scripts, so they open offline in any browser.
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import numpy as np

from affectlens import __version__
from affectlens.labels import CANONICAL_EMOTIONS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

REPORT = "report.html"
INDEX = "index.html"
PLOTS = "plots"
KEYFRAMES = "keyframes"
#: Key-frame thumbnails per input at most (the longest segments get one when there are more).
MAX_KEYFRAMES = 24
#: Longest side of a key-frame thumbnail, in pixels.
THUMBNAIL = 160
#: Rows of the segment and utterance tables shown per page (the tables on disk hold them all).
MAX_ROWS = 200
PLOT_DPI = 100
PLOT_WIDTH = 1100
PERSON_PLOT_HEIGHT = 640
#: Colour of the ``uncertain`` state (the smoothed label abstained); the emotions use ``EMOTION_COLOURS``.
UNCERTAIN_COLOUR = (222, 222, 222)

#: ``(start, end, label, confidence)`` of a coloured band in a plot; seconds, confidence in [0, 1] or ``None``.
Span = tuple[float, float, str, float | None]


def plot_size(kind: Literal["person", "overview"], rows: int = 1) -> tuple[int, int]:
    """Width and height in pixels of a person's plot, or of the overview plot with ``rows`` bands."""
    if kind == "person":
        return PLOT_WIDTH, PERSON_PLOT_HEIGHT
    return PLOT_WIDTH, 90 + 42 * max(1, rows)


def colour(label: str | None) -> tuple[int, int, int]:
    """RGB of an emotion label (``affectlens.visualize.EMOTION_COLOURS``); grey for ``uncertain`` or unknown."""
    from affectlens.visualize import EMOTION_COLOURS

    return EMOTION_COLOURS.get(label or "", UNCERTAIN_COLOUR)


def _rgb01(label: str | None) -> tuple[float, float, float]:
    r, g, b = colour(label)
    return r / 255, g / 255, b / 255


# --------------------------------------------------------------------------------------------------
# Numbers: what the page and the index say about one input


@dataclass(frozen=True)
class Person:
    """One face track: when it was seen, its share of time per smoothed label, and its mean valence/arousal."""

    track: int
    first: float
    last: float
    frames: int
    #: Seconds per timeline label (``uncertain`` included), largest first.
    seconds: dict[str, float]
    valence: float | None
    arousal: float | None

    @property
    def visible(self) -> float:
        return sum(self.seconds.values())

    @property
    def dominant(self) -> str | None:
        return dominant_label(self.seconds)


def dominant_label(seconds: Mapping[str, float]) -> str | None:
    """The label with the most time, preferring any emotion over ``uncertain``; ``None`` when there is none."""
    emotions = {k: v for k, v in seconds.items() if k != "uncertain" and v > 0}
    pool = emotions or {k: v for k, v in seconds.items() if v > 0}
    return max(pool, key=lambda k: pool[k]) if pool else None


def _mean(values: pd.Series) -> float | None:
    clean = values.dropna()
    return float(clean.mean()) if len(clean) else None


def persons(faces: pd.DataFrame, timeline: pd.DataFrame) -> list[Person]:
    """One ``Person`` per face track, in track order (faces without a track are not counted)."""
    out: list[Person] = []
    tracked = faces[faces["track"].notna()]
    for track, group in tracked.groupby("track", sort=True):
        segments = timeline[timeline["track"] == int(track)]
        seconds: dict[str, float] = {}
        for label, start, end in zip(segments["label"], segments["start"], segments["end"], strict=True):
            seconds[str(label)] = seconds.get(str(label), 0.0) + float(end - start)
        out.append(
            Person(
                track=int(track),
                first=float(group["time"].min()),
                last=float(group["time"].max()),
                frames=len(group),
                seconds=dict(sorted(seconds.items(), key=lambda kv: -kv[1])),
                valence=_mean(group["valence"]),
                arousal=_mean(group["arousal"]),
            )
        )
    return out


def label_counts(values: pd.Series) -> dict[str, int]:
    """How often each label occurs (missing values left out), most frequent first."""
    counts = values.dropna().astype(str).value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def summarize(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """The few numbers the index shows for an input: persons, dominant face and voice emotion, utterances."""
    faces, utterances, timeline = tables["faces"], tables["utterances"], tables["timeline"]
    seconds: dict[str, float] = {}
    for label, start, end in zip(timeline["label"], timeline["start"], timeline["end"], strict=True):
        seconds[str(label)] = seconds.get(str(label), 0.0) + float(end - start)
    voice = label_counts(utterances["speech_label"])
    return {
        "persons": int(faces["track"].dropna().nunique()),
        "dominant": dominant_label(seconds),
        "dominant_voice": next(iter(voice), None),
        "utterances": len(utterances),
    }


def _step(faces: pd.DataFrame, fps: float | None) -> float:
    """Seconds between analysed frames: ``1 / fps`` when known, else the median gap between frame times."""
    if fps:
        return 1.0 / fps
    times = np.unique(faces["time"].to_numpy(dtype=float))
    return float(np.median(np.diff(times))) if len(times) > 1 else 0.2


def _duration(tables: Mapping[str, pd.DataFrame], entry: Mapping[str, Any], step: float) -> float:
    ends = [0.0]
    if len(tables["faces"]):
        ends.append(float(tables["faces"]["time"].max()) + step)
    if len(tables["utterances"]):
        ends.append(float(tables["utterances"]["end"].max()))
    if len(tables["timeline"]):
        ends.append(float(tables["timeline"]["end"].max()))
    duration = entry.get("duration")
    return float(duration) if duration else max(ends)


# --------------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: only files are written
    import matplotlib.pyplot as plt

    return plt


def _runs(times: np.ndarray, step: float) -> Iterator[slice]:
    """Slices of consecutive frames: a gap longer than 2.5 ``step`` (the track was lost) starts a new one."""
    if not len(times):
        return
    cuts = np.flatnonzero(np.diff(times) > 2.5 * step + 1e-6) + 1
    bounds = [0, *cuts.tolist(), len(times)]
    for a, b in itertools.pairwise(bounds):
        yield slice(a, b)


def _bands(ax: Axes, spans: Sequence[Span], y: float, height: float, duration: float) -> None:
    """Draw ``(start, end, label, confidence)`` spans as coloured boxes on row ``y``, named where they fit."""
    for start, end, label, confidence in spans:
        alpha = 0.95 if confidence is None or math.isnan(confidence) else 0.45 + 0.5 * float(confidence)
        ax.broken_barh(
            [(start, max(end - start, 1e-3))], (y, height), facecolors=[(*_rgb01(label), min(alpha, 1.0))],
            edgecolors="white", linewidth=0.8, hatch="//" if label == "uncertain" else None,
        )  # fmt: skip
        if (end - start) >= 0.07 * duration:
            ax.text((start + end) / 2, y + height / 2, label, ha="center", va="center", fontsize=8, clip_on=True)


def _legend_handles() -> list[Any]:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=_rgb01(e), label=e) for e in CANONICAL_EMOTIONS]
    handles.append(Patch(facecolor=_rgb01("uncertain"), hatch="//", edgecolor="white", label="uncertain"))
    return handles


def _utterance_spans(utterances: pd.DataFrame, which: Literal["speech", "text"]) -> list[Span]:
    label, conf = f"{which}_label", f"{which}_confidence"
    rows = utterances[utterances[label].notna()]
    return [
        (float(s), float(e), str(lbl), None if math.isnan(c) else float(c))
        for s, e, lbl, c in zip(rows["start"], rows["end"], rows[label], rows[conf].astype(float), strict=True)
    ]


def plot_person(
    path: Path,
    faces: pd.DataFrame,
    timeline: pd.DataFrame,
    utterances: pd.DataFrame,
    duration: float,
    step: float,
    title: str,
    keyframe_times: Sequence[float] = (),
) -> None:
    """Write one person's timeline plot (``plot_size("person")``): expression probabilities (1 s moving
    average, stacked), valence and arousal, the timeline segments, and the speech (and text) emotion of the
    utterances, all over the video's time axis. ``faces`` and ``timeline`` hold that person's rows only.
    """
    plt = _pyplot()
    width, height = plot_size("person")
    has_words = bool(utterances["text_label"].notna().any())
    fig, axes = plt.subplots(
        4, 1, figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI, sharex=True,
        gridspec_kw={"height_ratios": [3.2, 2.0, 0.75, 1.1 if has_words else 0.75]}, layout="constrained",
    )  # fmt: skip
    probs_ax, va_ax, seg_ax, voice_ax = axes
    rows = faces.sort_values("time", kind="stable")
    times = rows["time"].to_numpy(dtype=float)
    window = max(1, round(1.0 / step))
    smoothed = rows[list(CANONICAL_EMOTIONS)].astype(float).rolling(window, center=True, min_periods=1).mean()
    colours = [_rgb01(e) for e in CANONICAL_EMOTIONS]
    for part in _runs(times, step):  # each frame stands for one step: the last one's area runs a step on
        t = np.append(times[part], times[part][-1] + step)
        values = smoothed.to_numpy()[part]
        probs_ax.stackplot(t, np.vstack([values, values[-1:]]).T, colors=colours, linewidth=0)
    probs_ax.set_ylim(0, 1)
    probs_ax.set_ylabel("expression\nprobability")
    probs_ax.set_title(title, loc="left", fontsize=11, fontweight="bold")

    for name, style in (("valence", "-"), ("arousal", "--")):
        values = rows[name].astype(float).to_numpy()
        for part in _runs(times, step):
            va_ax.plot(
                times[part],
                values[part],
                style,
                color="#333" if name == "valence" else "#c0392b",
                linewidth=1.6,
                label=name if part.start == 0 else None,
            )
    va_ax.axhline(0, color="#999", linewidth=0.6)
    va_ax.set_ylim(-1.05, 1.05)
    va_ax.set_ylabel("valence /\narousal")
    va_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)  # off the lines

    segments: list[Span] = [
        (float(s), float(e), str(lbl), float(c))
        for s, e, lbl, c in zip(timeline["start"], timeline["end"], timeline["label"], timeline["confidence"], strict=True)
    ]  # fmt: skip
    _bands(seg_ax, segments, 0, 1, duration)
    for when in keyframe_times:
        seg_ax.plot([when], [1.0], marker="v", color="#222", markersize=5, clip_on=False)
    seg_ax.set_ylim(0, 1)
    seg_ax.set_yticks([0.5], ["face"])

    _bands(voice_ax, _utterance_spans(utterances, "speech"), 1 if has_words else 0, 1, duration)
    ticks, names = [1.5 if has_words else 0.5], ["voice"]
    if has_words:
        _bands(voice_ax, _utterance_spans(utterances, "text"), 0, 1, duration)
        ticks, names = [1.5, 0.5], ["voice", "words"]
    voice_ax.set_ylim(0, 2 if has_words else 1)
    voice_ax.set_yticks(ticks, names)
    if utterances.empty:
        voice_ax.text(duration / 2, 0.5, "no speech", ha="center", va="center", fontsize=8, color="#777")
    voice_ax.set_xlim(0, max(duration, step))
    voice_ax.set_xlabel("time (s)")
    for ax in axes:
        ax.grid(axis="x", color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
    fig.legend(handles=_legend_handles(), loc="outside right upper", fontsize=8, frameon=False)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def plot_overview(
    path: Path, people: Sequence[Person], timeline: pd.DataFrame, utterances: pd.DataFrame, duration: float
) -> None:
    """Write the overview (``plot_size("overview", rows)``): one band per person (timeline segments), then the
    speech emotion and, when present, the text emotion of the utterances.
    """
    plt = _pyplot()
    rows: list[tuple[str, list[Span]]] = []
    for person in people:
        seg = timeline[timeline["track"] == person.track]
        spans: list[Span] = [
            (float(s), float(e), str(lbl), float(c))
            for s, e, lbl, c in zip(seg["start"], seg["end"], seg["label"], seg["confidence"], strict=True)
        ]
        rows.append((f"person {person.track}", spans))
    if not utterances.empty:
        rows.append(("voice", _utterance_spans(utterances, "speech")))
        if utterances["text_label"].notna().any():
            rows.append(("words", _utterance_spans(utterances, "text")))
    width, height = plot_size("overview", len(rows))
    fig, ax = plt.subplots(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI, layout="constrained")
    for k, (_, spans) in enumerate(reversed(rows)):
        _bands(ax, spans, k + 0.1, 0.8, duration)
    ax.set_yticks([k + 0.5 for k in range(len(rows))], [name for name, _ in reversed(rows)])
    ax.set_ylim(0, max(1, len(rows)))
    ax.set_xlim(0, max(duration, 1e-3))
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="#ddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if not rows:
        ax.text(0.5, 0.5, "no faces and no speech", transform=ax.transAxes, ha="center", va="center", color="#777")
    fig.legend(handles=_legend_handles(), loc="outside right upper", fontsize=8, frameon=False)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Key frames: a face crop at each segment's most confident frame


@dataclass(frozen=True)
class KeyFrame:
    """The thumbnail of one timeline segment: the frame where the face looked most like the segment's label."""

    track: int
    segment: int
    frame: int
    time: float
    box: tuple[float, float, float, float]
    label: str
    score: float
    file: str = ""


def pick_keyframes(faces: pd.DataFrame, timeline: pd.DataFrame, limit: int = MAX_KEYFRAMES) -> list[KeyFrame]:
    """One frame per segment (the highest probability of the segment's label; for ``uncertain`` the highest
    smoothed confidence), at most ``limit``: the longest segments win when there are more, ordered by time.
    """
    picks: list[tuple[float, KeyFrame]] = []
    eps = 1e-6
    for seg in timeline.itertuples(index=False):
        rows = faces[
            (faces["track"] == seg.track) & (faces["time"] >= seg.start - eps) & (faces["time"] < seg.end - eps)
        ]
        if rows.empty:
            continue
        label = str(seg.label)
        score = rows[label] if label in CANONICAL_EMOTIONS else rows["smoothed_confidence"]
        best = rows.loc[score.astype(float).fillna(-1.0).idxmax()]
        box = (float(best["x1"]), float(best["y1"]), float(best["x2"]), float(best["y2"]))
        pick = KeyFrame(
            int(seg.track),
            int(seg.segment),
            int(best["frame"]),
            float(best["time"]),
            box,
            label,
            float(score.loc[best.name]),
        )
        picks.append((float(seg.end - seg.start), pick))
    if len(picks) > limit:
        picks = sorted(picks, key=lambda p: (-p[0], p[1].time))[:limit]
    return sorted((p for _, p in picks), key=lambda k: (k.time, k.track))


def face_thumbnail(
    image: np.ndarray, box: tuple[float, float, float, float], label: str, size: int = THUMBNAIL, blur: bool = False
) -> np.ndarray:
    """A crop of the RGB ``image`` around ``box`` (XYXY pixels) with 35 % margin, the box drawn in the label's
    colour, scaled so its longest side is ``size`` pixels; ``blur`` hides the face (``visualize.blur_faces``).
    """
    import cv2

    if blur:
        from affectlens.visualize import blur_faces

        image = blur_faces(image, [box])
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    margin = 0.35 * max(x2 - x1, y2 - y1, 1.0)
    cx1, cy1 = int(np.clip(x1 - margin, 0, w - 1)), int(np.clip(y1 - margin, 0, h - 1))
    cx2, cy2 = int(np.clip(x2 + margin, cx1 + 1, w)), int(np.clip(y2 + margin, cy1 + 1, h))
    crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
    scale = size / max(crop.shape[:2])
    out_w, out_h = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    crop = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    p1 = (round((x1 - cx1) * scale), round((y1 - cy1) * scale))
    p2 = (round((x2 - cx1) * scale), round((y2 - cy1) * scale))
    edge = colour(label) if label in CANONICAL_EMOTIONS else (90, 90, 90)  # uncertain's light grey would vanish
    cv2.rectangle(crop, p1, p2, edge, 2, cv2.LINE_AA)
    return crop


def write_keyframes(
    video_path: str | os.PathLike[str],
    picks: Sequence[KeyFrame],
    folder: Path,
    fps: float | None,
    blur: bool = False,
) -> list[KeyFrame]:
    """Decode ``video_path`` once (sampled at ``fps``, as the analysis was, so frame indices match), stopping
    after the last frame needed, and write each pick as ``folder/t<track>-s<segment>.jpg``; returns the picks
    that got a file.
    """
    import cv2

    from perception.media import iter_video_frames

    wanted: dict[int, list[KeyFrame]] = {}
    for pick in picks:
        wanted.setdefault(pick.frame, []).append(pick)
    if not wanted:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written: list[KeyFrame] = []
    last = max(wanted)
    for frame in iter_video_frames(video_path, fps=fps):  # breaking out closes the decoder
        for pick in wanted.get(frame.index, ()):
            name = f"t{pick.track}-s{pick.segment}.jpg"
            thumb = face_thumbnail(frame.image, pick.box, pick.label, blur=blur)
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82])
            if ok:
                (folder / name).write_bytes(data.tobytes())
                written.append(replace(pick, file=f"{folder.name}/{name}"))
        if frame.index >= last:
            break
    missing = len(picks) - len(written)
    if missing:
        logger.warning("%s: %d key frame(s) not found when decoding again", video_path, missing)
    return written


# --------------------------------------------------------------------------------------------------
# HTML


_CSS = """
:root { --ink: #1d232b; --muted: #5f6b7a; --line: #e3e6ea; --bg: #f5f6f8; --card: #fff; --accent: #2b6cb0; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 48px; }
header { margin-bottom: 14px; }
header .crumbs { font-size: 12px; color: var(--muted); }
header .crumbs a { color: var(--accent); text-decoration: none; }
h1 { font-size: 22px; margin: 4px 0 2px; word-break: break-all; }
h2 { font-size: 17px; margin: 0 0 10px; }
h3 { font-size: 14px; margin: 14px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.sub { color: var(--muted); font-size: 13px; word-break: break-all; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px;
  margin: 14px 0; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr)); gap: 10px; margin: 0; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 10px 12px; }
.stat b { display: block; font-size: 20px; font-weight: 650; }
.stat span { color: var(--muted); font-size: 12px; }
img.plot { width: 100%; height: auto; display: block; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
.chip { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; white-space: nowrap; }
.bar { display: flex; height: 16px; border-radius: 4px; overflow: hidden; border: 1px solid var(--line);
  margin: 6px 0 4px; }
.bar div { height: 100%; }
.shares { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 12px; color: var(--muted); }
.person-head { display: flex; justify-content: space-between; align-items: baseline; gap: 12px; flex-wrap: wrap; }
.facts { color: var(--muted); font-size: 13px; }
.facts b { color: var(--ink); font-weight: 600; }
.keyframes { display: flex; flex-wrap: wrap; gap: 10px; }
figure.kf { margin: 0; width: 168px; background: #fafbfc; border: 1px solid var(--line); border-radius: 8px;
  padding: 4px; }
figure.kf img { display: block; margin: 0 auto; max-width: 160px; max-height: 160px; border-radius: 4px; }
figure.kf figcaption { font-size: 11px; color: var(--muted); margin-top: 4px; line-height: 1.3; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.warn { background: #fff8e6; border-color: #f1d48b; }
.warn li { word-break: break-all; }
.status-done { background: #dff3e4; color: #1d6b35; }
.status-failed { background: #fde2e1; color: #9b1c1c; }
.reason { color: #9b1c1c; font-size: 12px; word-break: break-all; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
footer { color: var(--muted); font-size: 12px; margin-top: 20px; }
a { color: var(--accent); }
"""


def _e(value: object) -> str:
    """Text for HTML: escaped, with missing values (``None``, NaN, ``pd.NA``) as an empty string."""
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value))


def _href(relative: str) -> str:
    return html.escape(quote(relative, safe="/"))


def _seconds(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(value, 60)
    if minutes < 60:
        return f"{int(minutes)}:{seconds:04.1f}"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}:{int(minutes):02d}:{seconds:04.1f}"


def _signed(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:+.2f}"


def _chip(label: object, suffix: str = "") -> str:
    text = _e(label)
    if not text:
        return "—"
    r, g, b = colour(str(label))
    ink = "#111" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"
    return f'<span class="chip" style="background:rgb({r},{g},{b});color:{ink}">{text}{_e(suffix)}</span>'


def _share_bar(seconds: Mapping[str, float]) -> str:
    total = sum(seconds.values())
    if total <= 0:
        return '<p class="facts">no timeline segments</p>'
    parts = []
    for label, value in seconds.items():
        r, g, b = colour(label)
        title = f"{label} {value / total:.0%}"
        parts.append(
            f'<div style="width:{100 * value / total:.3f}%;background:rgb({r},{g},{b})" title="{_e(title)}"></div>'
        )
    legend = "".join(
        f"<span>{_chip(label)} {value / total:.0%} · {_seconds(value)}</span>" for label, value in seconds.items()
    )
    return f'<div class="bar">{"".join(parts)}</div><div class="shares">{legend}</div>'


def _count_bar(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return '<p class="facts">none</p>'
    parts = []
    for label, n in counts.items():
        r, g, b = colour(label)
        parts.append(
            f'<div style="width:{100 * n / total:.3f}%;background:rgb({r},{g},{b})" title="{_e(label)}"></div>'
        )
    legend = "".join(f"<span>{_chip(label)} {n} ({n / total:.0%})</span>" for label, n in counts.items())
    return f'<div class="bar">{"".join(parts)}</div><div class="shares">{legend}</div>'


def _stat(value: str, name: str) -> str:
    return f'<div class="stat"><b>{value}</b><span>{_e(name)}</span></div>'


def _page(title: str, body: str) -> str:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><main>\n{body}\n"
        f"<footer>Written by affectlens {_e(__version__)} on {_e(stamp)}. Each utterance is given to the face "
        "whose mouth moves while it is spoken, or to nobody when that is unclear (affectlens/speaker.py); labels "
        "are model estimates, not ground truth.</footer>\n"
        "</main></body></html>\n"
    )


def _person_section(person: Person, timeline: pd.DataFrame, keyframes: Sequence[KeyFrame], plot: str) -> str:
    segments = timeline[timeline["track"] == person.track]
    facts = (
        f"seen <b>{_seconds(person.first)}</b> – <b>{_seconds(person.last)}</b> · <b>{person.frames}</b> frames · "
        f"mean valence <b>{_signed(person.valence)}</b> · mean arousal <b>{_signed(person.arousal)}</b> · "
        f"{len(segments)} segment(s)"
    )
    parts = [
        f'<section id="person-{person.track}" class="person">',
        f'<div class="person-head"><h2>Person {person.track} <span class="sub">(face track {person.track})</span></h2>'
        f"<div>{_chip(person.dominant)}</div></div>",
        f'<p class="facts">{facts}</p>',
        "<h3>Share of time per label</h3>",
        _share_bar(person.seconds),
        "<h3>Over time</h3>",
        f'<img class="plot" src="{_href(plot)}" alt="timeline plot of person {person.track}" '
        f'width="{PLOT_WIDTH}" height="{PERSON_PLOT_HEIGHT}">',
    ]
    mine = [k for k in keyframes if k.track == person.track]
    if mine:
        parts.append('<h3>Key frames (most confident frame of each segment)</h3><div class="keyframes">')
        by_segment = {int(s.segment): s for s in segments.itertuples(index=False)}
        for k in mine:
            seg = by_segment.get(k.segment)
            span = f"{_seconds(float(seg.start))}–{_seconds(float(seg.end))}" if seg is not None else ""
            parts.append(
                f'<figure class="kf"><img src="{_href(k.file)}" alt="{_e(k.label)} at {k.time:.1f} s" loading="lazy">'
                f"<figcaption>{_chip(k.label, f' {k.score:.0%}')}<br>segment {k.segment} · {span}<br>"
                f"frame at {_seconds(k.time)}</figcaption></figure>"
            )
        parts.append("</div>")
    if len(segments):
        parts.append("<h3>Segments</h3>")
        parts.append(_segment_table(segments))
    parts.append("</section>")
    return "\n".join(parts)


def _segment_table(segments: pd.DataFrame) -> str:
    rows = []
    for seg in segments.head(MAX_ROWS).itertuples(index=False):
        transcript = _e(seg.transcript)
        rows.append(
            f"<tr><td class=num>{seg.segment}</td><td class=num>{_seconds(float(seg.start))}</td>"
            f"<td class=num>{_seconds(float(seg.end))}</td><td>{_chip(seg.label)}</td>"
            f"<td class=num>{float(seg.confidence):.0%}</td><td class=num>{seg.frames}</td>"
            f"<td>{_chip(seg.voice_label)}</td><td>{transcript}</td></tr>"
        )
    more = len(segments) - MAX_ROWS
    note = f'<p class="facts">… and {more} more (see the timeline table)</p>' if more > 0 else ""
    return (
        "<table><thead><tr><th class=num>#</th><th class=num>start</th><th class=num>end</th><th>label</th>"
        "<th class=num>confidence</th><th class=num>frames</th><th>voice</th><th>transcript</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{note}"
    )


def _speech_section(utterances: pd.DataFrame) -> str:
    if utterances.empty:
        return '<section id="speech"><h2>Speech</h2><p class="facts">No utterances.</p></section>'
    speaking = float((utterances["end"] - utterances["start"]).sum())
    facts = (
        f"<b>{len(utterances)}</b> utterance(s) · <b>{_seconds(speaking)}</b> of speech · mean voice valence "
        f"<b>{_signed(_mean(utterances['speech_valence']))}</b> · mean voice arousal "
        f"<b>{_signed(_mean(utterances['speech_arousal']))}</b>"
    )
    rows = []
    for u in utterances.head(MAX_ROWS).itertuples(index=False):
        conf = "" if _e(u.speech_confidence) == "" else f" {float(u.speech_confidence):.0%}"
        rows.append(
            f"<tr><td class=num>{u.utterance}</td><td class=num>{_seconds(float(u.start))}</td>"
            f"<td class=num>{_seconds(float(u.end))}</td><td>{_chip(u.speech_label, conf)}</td>"
            f"<td>{_chip(u.text_label)}</td><td>{_e(u.text)}</td></tr>"
        )
    more = len(utterances) - MAX_ROWS
    note = f'<p class="facts">… and {more} more (see the utterances table)</p>' if more > 0 else ""
    return "\n".join(
        [
            '<section id="speech"><h2>Speech</h2>',
            f'<p class="facts">{facts}</p>',
            '<div class="two"><div><h3>Voice emotion</h3>',
            _count_bar(label_counts(utterances["speech_label"])),
            "</div><div><h3>Emotion of the words</h3>",
            _count_bar(label_counts(utterances["text_label"])),
            "</div></div><h3>Utterances</h3>",
            "<table><thead><tr><th class=num>#</th><th class=num>start</th><th class=num>end</th><th>voice</th>"
            f"<th>words</th><th>transcript</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{note}",
            "</section>",
        ]
    )


def _provenance_section(entry: Mapping[str, Any]) -> str:
    models = entry.get("models") or {}
    weights = entry.get("weights") or {}
    model_rows = "".join(f"<tr><td>{_e(k)}</td><td class=mono>{_e(v)}</td></tr>" for k, v in sorted(models.items()))
    weight_rows = "".join(
        f'<tr><td class=mono>{_e(k)}</td><td class=mono title="{_e(v)}">{_e(str(v)[:16])}…</td></tr>'
        for k, v in sorted(weights.items())
    )
    facts = [
        ("input", entry.get("input")),
        ("sha256", entry.get("sha256")),
        ("size", f"{entry['size'] / 1e6:.1f} MB" if entry.get("size") else None),
        ("kind", entry.get("kind")),
        ("affectlens", entry.get("affectlens")),
        ("analysis time", f"{entry['seconds']:.1f} s" if entry.get("seconds") is not None else None),
        ("finished", entry.get("finished")),
    ]
    fact_rows = "".join(f"<tr><th>{_e(k)}</th><td class=mono>{_e(v)}</td></tr>" for k, v in facts if v is not None)
    return (
        '<section id="provenance"><h2>Models and provenance</h2><div class="two">'
        f"<div><h3>Input</h3><table>{fact_rows}</table><h3>Models</h3><table>{model_rows}</table></div>"
        f"<div><h3>Weights (sha256)</h3><table>{weight_rows or '<tr><td>none recorded</td></tr>'}</table></div>"
        "</div></section>"
    )


# --------------------------------------------------------------------------------------------------
# The per-input report


def write_video_report(
    video_dir: str | os.PathLike[str],
    tables: Mapping[str, pd.DataFrame],
    video_path: str | os.PathLike[str] | None = None,
    entry: Mapping[str, Any] | None = None,
    *,
    fps: float | None = None,
    max_keyframes: int = MAX_KEYFRAMES,
    blur_faces: bool = False,
) -> dict[str, Any]:
    """Write ``video_dir/report.html`` with ``plots/*.png`` and ``keyframes/*.jpg`` for one annotated input.

    ``tables`` holds its ``faces``, ``utterances`` and ``timeline`` tables (``affectlens.annotate`` schemas);
    ``video_path`` is decoded again for the key frames (sampled at ``fps``, the analysis rate, so frame indices
    match; none when ``None`` or audio only); ``entry`` is its manifest entry (input, duration, models,
    weights, warnings). Plots and key frames of an earlier report in the folder are replaced. Returns what the
    index shows: ``file`` (relative to the output folder), ``persons``, ``dominant``, ``dominant_voice``,
    ``utterances``, ``keyframes``. ``blur_faces`` blurs the faces in the key frames.
    """
    folder = Path(video_dir)
    entry = entry or {}
    faces, utterances, timeline = tables["faces"], tables["utterances"], tables["timeline"]
    step = _step(faces, fps)
    duration = _duration(tables, entry, step)
    people = persons(faces, timeline)
    plots, thumbs = folder / PLOTS, folder / KEYFRAMES
    for old in [*plots.glob("*.png"), *thumbs.glob("*.jpg")]:
        old.unlink()
    plots.mkdir(parents=True, exist_ok=True)

    keyframes: list[KeyFrame] = []
    if video_path is not None and len(faces) and len(timeline):
        picked = pick_keyframes(faces, timeline, max_keyframes)
        keyframes = write_keyframes(video_path, picked, thumbs, fps, blur=blur_faces)

    plot_overview(plots / "overview.png", people, timeline, utterances, duration)
    sections = []
    for person in people:
        name = f"{PLOTS}/person-{person.track}.png"
        plot_person(
            folder / name, faces[faces["track"] == person.track], timeline[timeline["track"] == person.track],
            utterances, duration, step, f"Person {person.track}",
            [k.time for k in keyframes if k.track == person.track],
        )  # fmt: skip
        sections.append(_person_section(person, timeline, keyframes, name))

    summary = summarize(tables)
    source = str(entry.get("input") or video_path or folder.name)
    frames = entry.get("frames", int(faces["frame"].nunique()))
    stats = [
        _stat(_seconds(duration), "duration"),
        _stat(str(frames), "frames analysed"),
        _stat(f"{1 / step:.1f}" if len(faces) else "—", "frames per second analysed"),
        _stat(str(len(people)), "persons (face tracks)"),
        _stat(_chip(summary["dominant"]), "dominant face emotion"),
        _stat(str(len(utterances)), "utterances"),
        _stat(_chip(summary["dominant_voice"]), "dominant voice emotion"),
    ]
    warnings = entry.get("warnings") or []
    body = [
        f'<header><div class="crumbs"><a href="../{INDEX}">← all videos</a></div>'
        f'<h1>{_e(Path(source).name)}</h1><div class="sub">{_e(source)} · id {_e(folder.name)}</div></header>',
        f'<div class="stats">{"".join(stats)}</div>',
    ]
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        body.append(f'<section class="warn"><h2>Warnings</h2><ul>{items}</ul></section>')
    body.append(
        '<section id="overview"><h2>Overview</h2><p class="facts">Timeline segments of each person (smoothed '
        "expression, cut when a new label lasts long enough) and the emotion of each utterance, over the whole "
        f'input.</p><img class="plot" src="{_href(PLOTS + "/overview.png")}" alt="overview of the timeline"></section>'
    )
    if people:
        rows = "".join(
            f'<tr><td><a href="#person-{p.track}">Person {p.track}</a></td><td class=num>{_seconds(p.visible)}</td>'
            f"<td class=num>{p.frames}</td><td>{_chip(p.dominant)}</td><td class=num>{_signed(p.valence)}</td>"
            f"<td class=num>{_signed(p.arousal)}</td><td>{_share_bar(p.seconds)}</td></tr>"
            for p in people
        )
        body.append(
            '<section id="persons"><h2>Persons</h2><table><thead><tr><th>person</th><th class=num>on screen</th>'
            "<th class=num>frames</th><th>dominant</th><th class=num>valence</th><th class=num>arousal</th>"
            f"<th>share of time per label</th></tr></thead><tbody>{rows}</tbody></table></section>"
        )
    elif len(faces) == 0 and entry.get("kind") != "audio":
        body.append('<section><h2>Persons</h2><p class="facts">No face was found.</p></section>')
    body.extend(sections)
    body.append(_speech_section(utterances))
    body.append(_provenance_section(entry))
    (folder / REPORT).write_text(_page(f"{Path(source).name} — AffectLens report", "\n".join(body)), encoding="utf-8")
    logger.info("%s: report written", folder / REPORT)
    return {**summary, "file": f"{folder.name}/{REPORT}", "keyframes": len(keyframes)}


# --------------------------------------------------------------------------------------------------
# The index page


def _index_summary(out: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """What the index shows for a done input: its report's summary, else one computed from its tables."""
    report = entry.get("report")
    if isinstance(report, dict) and "persons" in report:
        return report
    from affectlens.annotate import SCHEMAS, TABLES, read_table

    try:
        tables = {name: read_table(out / entry["outputs"][name]["file"], SCHEMAS[name]) for name in TABLES}
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("%s: cannot read the tables of %s for the index (%s)", out, entry.get("input"), exc)
        return {}
    return summarize(tables)


def write_index(out_dir: str | os.PathLike[str], manifest: Mapping[str, Any] | None = None) -> Path:
    """Write ``out_dir/index.html``: every input of the manifest (read from ``manifest.json`` when not given)
    with its status (done, or failed and why), duration, persons, dominant emotion and a link to its report.
    """
    out = Path(out_dir)
    if manifest is None:
        from affectlens.annotate import MANIFEST

        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    videos: Mapping[str, Mapping[str, Any]] = manifest.get("videos", {})
    rows = []
    done = failed = 0
    total_duration = 0.0
    for vid, entry in sorted(videos.items(), key=lambda kv: (str(kv[1].get("input", "")), kv[0])):
        source = str(entry.get("input") or vid)
        status = str(entry.get("status", "unknown"))
        chip = f'<span class="chip status-{_e(status)}">{_e(status)}</span>'
        if status != "done":
            failed += 1
            rows.append(
                f"<tr><td>{chip}</td><td><b>{_e(Path(source).name)}</b><div class=sub>{_e(source)}</div>"
                f'<div class="reason">{_e(entry.get("reason", ""))}</div></td>'
                "<td class=num>—</td><td class=num>—</td><td>—</td><td class=num>—</td><td>—</td></tr>"
            )
            continue
        done += 1
        info = _index_summary(out, entry)
        duration = entry.get("duration")
        total_duration += float(duration or 0.0)
        report = info.get("file") or f"{vid}/{REPORT}"
        exists = (out / report).is_file()
        link = f'<a href="{_href(report)}">report</a>' if exists else "no report"
        name = _e(Path(source).name)
        title = f'<a href="{_href(report)}">{name}</a>' if exists else name
        dominant = _chip(info.get("dominant")) if info.get("dominant") else (
            f"{_chip(info.get('dominant_voice'))} <span class=sub>voice</span>" if info.get("dominant_voice") else "—"
        )  # fmt: skip
        warn = len(entry.get("warnings") or [])
        note = f"<div class=sub>{warn} warning(s)</div>" if warn else ""
        rows.append(
            f"<tr><td>{chip}</td><td><b>{title}</b><div class=sub>{_e(source)}</div>{note}</td>"
            f"<td class=num>{_seconds(float(duration)) if duration else '—'}</td>"
            f"<td class=num>{_e(info.get('persons', '—'))}</td><td>{dominant}</td>"
            f"<td class=num>{_e(info.get('utterances', '—'))}</td><td>{link}</td></tr>"
        )
    settings = manifest.get("settings", {})
    setting_text = ", ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in settings.items())
    models = manifest.get("models") or {}
    model_text = ", ".join(f"{k}: {v}" for k, v in sorted(models.items()) if v)
    stats = [
        _stat(str(len(videos)), "inputs"),
        _stat(str(done), "done"),
        _stat(str(failed), "failed"),
        _stat(_seconds(total_duration), "total duration"),
        _stat(str(len(manifest.get("runs", []))), "runs"),
    ]
    body = "\n".join(
        [
            f'<header><h1>AffectLens annotations</h1><div class="sub">{_e(out.resolve())}</div></header>',
            f'<div class="stats">{"".join(stats)}</div>',
            "<section><h2>Inputs</h2><table><thead><tr><th>status</th><th>input</th><th class=num>duration</th>"
            "<th class=num>persons</th><th>dominant emotion</th><th class=num>utterances</th><th>report</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>",
            f'<section><h2>Settings and models</h2><p class="facts">{_e(setting_text)}</p>'
            f'<p class="facts mono">{_e(model_text)}</p><p class="facts">Tables: <span class="mono">'
            "&lt;video-id&gt;/faces, utterances, timeline</span>; read them with "
            '<span class="mono">affectlens.load_annotations(folder)</span>. Failed inputs are also in '
            '<span class="mono">errors.jsonl</span>.</p></section>',
        ]
    )
    path = out / INDEX
    path.write_text(_page("AffectLens annotations", body), encoding="utf-8")
    logger.info("%s: index written (%d done, %d failed)", path, done, failed)
    return path
