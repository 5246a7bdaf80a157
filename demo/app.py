"""The Gradio web demo: ``build_demo(analyzer) -> gr.Blocks``. It calls only the public API.

Run with ``affectlens demo`` (binds to 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

import gradio as gr
import numpy as np
import pandas as pd

from affectlens import CANONICAL_EMOTIONS, AffectLensError, AnalysisResult, Analyzer, MediaError, load_annotations
from affectlens.annotate import MODALITIES, AnnotateSettings, annotate_files
from affectlens.visualize import AnnotatedVideo, draw_faces
from demo.samples import PORTRAIT, make_sample_video

if TYPE_CHECKING:
    from generation.speech import EngineChoice

logger = logging.getLogger(__name__)


def face_guidance_default() -> float:
    """The guidance scale the shipped face diffusion model was judged at (its ``model_index.json``), read without
    loading the model; 3.0 (and a warning in the log) when the file is missing or unreadable, so the demo still
    starts; generating then reports the missing weights."""
    import json

    from affectlens import weights

    try:
        return float(json.loads(weights.locate("emotion-diffusion-index").path.read_text())["default_guidance"])
    except (AffectLensError, OSError, KeyError, TypeError, ValueError) as exc:
        logger.warning("no judged guidance for the face diffusion model (%s); the Create tab starts at 3.0", exc)
        return 3.0


MAX_UPLOAD = "200mb"
VIDEO_FPS = 4.0
VIDEO_MAX_FRAMES = 120
#: The talking head's emotion choice that lets our text model read the emotion from the words.
FROM_TEXT = "from the text"
SPEECH_ENGINES = ("auto", "piper", "espeak-ng")
EXAMPLE_REPLY = (
    "I'm so sorry, that sounds really painful. It makes sense that you feel hurt. Do you want to tell me what happened?"
)
#: Talking-head videos kept in the demo's folder (Gradio serves its own copies; older ones are deleted).
KEEP_VIDEOS = 8
#: Annotate tab: files per run at most, runs kept in the demo's folder, and each run folder's name prefix.
MAX_ANNOTATE_FILES = 8
KEEP_RUNS = 3
RUN_PREFIX = "annotate-"
#: The annotate output inside a run folder, and the pages of it the demo shows (images inlined).
RUN_OUTPUT = "annotations"
INDEX_PAGE = "index.html"
ANNOTATE_COLUMNS = ["input", "status", "persons", "dominant emotion", "reason or warnings"]
ANNOTATE_FPS = 2.0
#: The webcam tab: seconds between frames sent, and seconds of streaming per start (a 2-core CPU's pace).
STREAM_EVERY = 0.5
STREAM_TIME_LIMIT = 60
#: The sample video, written into the demo's folder on first use.
SAMPLE_VIDEO = "sample-video.mp4"


def _not_unicode(text: str | None) -> str | None:
    """Why ``text`` cannot be read, or None: an API client can send a lone surrogate, which no model can encode."""
    try:
        (text or "").encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"the text is not valid Unicode (a lone surrogate, U+{ord(exc.object[exc.start]):04X}, at {exc.start})"
    return None


def _label_value(result: AnalysisResult) -> dict[str, float]:
    return result.mean_expression() or {}


def _status(result: AnalysisResult) -> str:
    mean = result.mean_expression()
    if not mean:
        return "No face found. " + " ".join(result.warnings)
    top = max(mean, key=mean.__getitem__)
    return (
        f"{result.num_faces} face(s) in {len(result.frames)} frame(s); overall expression: **{top}** ({mean[top]:.0%})."
    )


UTTERANCE_COLUMNS = ["start", "end", "transcript", "voice", "words", "salient words", "pitch Hz", "syll/s"]


def _utterance_rows(result: AnalysisResult) -> list[list[Any]]:
    rows = []
    for u in result.utterances:
        voice = f"{u.speech_emotion.label} {u.speech_emotion.confidence:.0%}" if u.speech_emotion else ""
        words = f"{u.text_emotion.emotion.label} {u.text_emotion.emotion.confidence:.0%}" if u.text_emotion else ""
        salient = ", ".join(w for w, _ in u.text_emotion.salient_words[:4]) if u.text_emotion else ""
        pitch = round(u.prosody.pitch_mean) if u.prosody and u.prosody.pitch_mean else None
        rate = round(u.prosody.speaking_rate, 1) if u.prosody else None
        rows.append([round(u.start, 2), round(u.end, 2), u.text or "", voice, words, salient, pitch, rate])
    return rows


def _highlight(text: str, salient: tuple[tuple[str, float], ...]) -> list[tuple[str, float | None]]:
    """Word-by-word (word, attribution scaled to [-1, 1]) for ``gr.HighlightedText``."""
    top = max((abs(s) for _, s in salient), default=0.0) or 1.0
    scores = {w.lower(): s / top for w, s in salient}
    return [(word + " ", scores.get(word.strip(".,!?;:\"'()").lower())) for word in text.split()]


def _new_video(folder: str, prefix: str) -> Path:
    """A fresh ``prefix*.mp4`` name in ``folder``; the oldest earlier ones go, so at most ``KEEP_VIDEOS`` stay."""
    earlier = sorted(Path(folder).glob(f"{prefix}*.mp4"), key=lambda f: f.stat().st_mtime)
    for old in earlier[: max(0, len(earlier) - KEEP_VIDEOS + 1)]:
        old.unlink(missing_ok=True)
    handle, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".mp4")
    os.close(handle)
    return Path(name)


def _new_run(folder: str) -> Path:
    """A fresh ``annotate-*`` run folder in ``folder``; the oldest earlier ones go, so at most ``KEEP_RUNS`` stay.

    Names start with the creation time in nanoseconds, so they sort from oldest to newest."""
    earlier = sorted(p for p in Path(folder).glob(f"{RUN_PREFIX}*") if p.is_dir() and not p.is_symlink())
    for old in earlier[: max(0, len(earlier) - KEEP_RUNS + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=folder, prefix=f"{RUN_PREFIX}{time.time_ns():020d}-"))


def _zip_folder(folder: Path, target: Path) -> Path:
    """``folder``'s files (hidden ones, the lock and temporary files, left out) in ``target``, under ``folder.name/``."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not path.is_symlink() and not any(p.startswith(".") for p in relative.parts):
                archive.write(path, f"{folder.name}/{relative.as_posix()}")
    return target


_IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]*)(")', re.IGNORECASE)
_LINK = re.compile(r'(<a\b[^>]*?)\s+href="(?!#)[^"]*"', re.IGNORECASE)
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _inline_page(out: Path, page: Path) -> str:
    """``page`` (an HTML file under ``out``) in a sandboxed iframe, its images under ``out`` inlined as data URIs
    and its links to other files dropped (an iframe's ``srcdoc`` has no folder to resolve them against)."""
    root = out.resolve()

    def inline(match: re.Match[str]) -> str:
        src = unquote(html.unescape(match.group(2)))
        target = (page.parent / src).resolve() if src and "://" not in src and not src.startswith("/") else None
        if target is None or not target.is_relative_to(root) or target.suffix.lower() not in _IMAGE_TYPES:
            return match.group(1) + match.group(3)
        try:
            data = base64.b64encode(target.read_bytes()).decode("ascii")
        except OSError:
            return match.group(1) + match.group(3)
        return f"{match.group(1)}data:{_IMAGE_TYPES[target.suffix.lower()]};base64,{data}{match.group(3)}"

    text = _LINK.sub(r"\1", _IMG_SRC.sub(inline, page.read_text(encoding="utf-8")))
    return (
        f'<iframe title="AffectLens report" sandbox="" srcdoc="{html.escape(text, quote=True)}" '
        'style="width:100%;height:760px;border:1px solid #e3e6ea;border-radius:8px;background:#fff"></iframe>'
    )


def _strip_folder(text: str, path: str) -> str:
    """``text`` without ``path``'s folder: a visitor sees the name of what they uploaded, not the server's paths."""
    return text.replace(str(Path(path).parent) + os.sep, "")


def _annotated_row(name: str, vid: str, annotations: Any) -> list[Any]:
    """A done input's summary row: persons (face tracks) and dominant emotion (the most time on the timeline, an
    emotion before ``uncertain``; for audio alone, the most frequent voice emotion)."""
    faces = annotations.faces[annotations.faces["video"] == vid]
    timeline = annotations.timeline[annotations.timeline["video"] == vid]
    seconds = (timeline["end"] - timeline["start"]).groupby(timeline["label"].astype(str)).sum()
    emotions = seconds[(seconds.index != "uncertain") & (seconds > 0)]
    pool = emotions if len(emotions) else seconds[seconds > 0]
    dominant = str(pool.idxmax()) if len(pool) else None
    if dominant is None:
        voices = annotations.utterances.loc[annotations.utterances["video"] == vid, "speech_label"].dropna()
        dominant = f"{voices.astype(str).value_counts().idxmax()} (voice)" if len(voices) else "—"
    warnings = annotations.manifest["videos"][vid].get("warnings") or []
    return [name, "done", int(faces["track"].dropna().nunique()), dominant, "; ".join(warnings)]


def _talking_head_summary(info: dict[str, Any], source: str) -> str:
    """Markdown: the emotion shown, the voice, the figures and the chain of thought of a talking-head video."""
    performance, speech, timing = info["performance"], info["speech"], info["timing"]
    mixture = " + ".join(f"{name} {weight:.0%}" for name, weight in performance["emotion"].items())
    lines = [
        f"**{mixture}** at intensity {performance['intensity']:.2f} ({source}); voice: {speech['engine']} "
        f"({speech['voice']}), {speech['seconds']:.1f} s; {info['frames']} frames at {info['fps']:g} fps, rendered "
        f"in {timing['render_seconds']:.1f} s ({timing['render_fps']:.0f} fps).",
        "",
        "**Chain of thought**",
        "",
        *(f"{k}. {reason}" for k, reason in enumerate(performance["reasons"], 1)),
    ]
    return "\n".join(lines)


def build_demo(analyzer: Analyzer) -> gr.Blocks:
    """The demo's UI around an injected ``Analyzer`` (tests pass one built from tiny parts)."""
    # Annotated videos go to one folder that is removed with the demo (Gradio copies what it serves).
    workdir = tempfile.TemporaryDirectory(prefix="affectlens-demo-")

    def analyze_image(image: np.ndarray | None, blur: bool = False) -> tuple[Any, Any, Any, str]:
        if image is None:
            return None, None, None, "Upload an image first."
        try:
            result = analyzer.analyze_image(image)
        except MediaError as exc:
            return None, None, None, f"Error: {exc}"
        return draw_faces(image, result.faces, blur=blur), _label_value(result), result.to_dict(), _status(result)

    def analyze_video(path: str | None, blur: bool = False) -> tuple[Any, Any, Any, str]:
        if not path:
            return None, None, None, "Upload a video first."
        out = _new_video(workdir.name, "annotated-")  # earlier ones go: the folder keeps a few at most
        try:
            with AnnotatedVideo(out, VIDEO_FPS, blur=blur) as annotate:
                result = analyzer.analyze_video(path, fps=VIDEO_FPS, max_frames=VIDEO_MAX_FRAMES, on_frame=annotate)
        except MediaError as exc:
            return None, None, None, f"Error: {exc}"
        return str(out), _label_value(result), result.to_dict(), _status(result)

    def analyze_audio(path: str | None) -> tuple[Any, Any, Any, str]:
        if not path:
            return None, None, None, "Upload or record audio first."
        try:
            result = analyzer.analyze_audio(path)
        except MediaError as exc:
            return None, None, None, f"Error: {exc}"
        voices = [u.speech_emotion for u in result.utterances if u.speech_emotion is not None]
        label = {}
        if voices:
            label = {e: sum(v.probabilities[e] for v in voices) / len(voices) for e in voices[0].probabilities}
        status = f"{len(result.utterances)} utterance(s)." if result.utterances else " ".join(result.warnings)
        return _utterance_rows(result), label, result.to_dict(), status

    def analyze_text(text: str | None) -> tuple[Any, Any, Any, Any, str]:
        if not text or not text.strip():
            return None, None, None, None, "Type some text first."
        if problem := _not_unicode(text):
            return None, None, None, None, f"Error: {problem}"
        try:
            result = analyzer.analyze_text(text)
        except MediaError as exc:
            return None, None, None, None, f"Error: {exc}"
        emotion = result.utterances[0].text_emotion
        assert emotion is not None
        fine = dict(sorted(emotion.fine.items(), key=lambda kv: -kv[1])[:5])
        va = (
            f"valence {emotion.emotion.valence:+.2f}, arousal {emotion.emotion.arousal:+.2f}"
            if (emotion.emotion.valence is not None and emotion.emotion.arousal is not None)
            else ""
        )
        return emotion.emotion.probabilities, fine, _highlight(text, emotion.salient_words), result.to_dict(), va

    def analyze_moment(image: np.ndarray | None, audio: str | None, text: str | None) -> tuple[str, Any, Any, str]:
        """A photo, a voice note and typed text of one moment -> one affective tree."""
        sources: list[Any] = [x for x in (image, audio) if x is not None and (not isinstance(x, str) or x)]
        typed = text if text and text.strip() else None
        if not sources and typed is None:
            return "", None, None, "Give a photo, a voice note or some text (any of them, or all)."
        if problem := _not_unicode(typed):
            return "", None, None, f"Error: {problem}"
        try:
            result = analyzer.analyze(sources if len(sources) != 1 else sources[0], text=typed)
        except MediaError as exc:
            return "", None, None, f"Error: {exc}"
        tree = result.tree
        assert tree is not None
        value = tree.emotion.value if isinstance(tree.emotion.value, dict) else {}
        label = value.get("probabilities") or {}
        return tree.render(), label, tree.to_dict(), " ".join(tree.warnings)

    def analyze_stream(frame: np.ndarray | None, blur: bool = False) -> np.ndarray | None:
        """One webcam frame -> the same frame with each face's box, expression, AUs and mesh drawn (or blurred)."""
        if frame is None:
            return None
        try:
            faces = analyzer.analyze_image(frame).faces
        except MediaError:
            return frame  # an odd frame (empty, wrong shape) is shown as it came
        return draw_faces(frame, faces, blur=blur)

    sample_lock = threading.Lock()

    def sample_video() -> str:
        """The sample video (the portrait, moving), written into the demo's folder on first use."""
        path = Path(workdir.name) / SAMPLE_VIDEO
        with sample_lock:
            if not path.is_file():
                os.replace(make_sample_video(path.with_name(f".{SAMPLE_VIDEO}")), path)
        return str(path)

    def sample_upload() -> list[str]:
        """The Annotate tab's example: the sample video as its one upload."""
        return [sample_video()]

    def run_output(run: str | None) -> Path | None:
        """The annotate output of ``run`` when it is one of this demo's run folders that still exists, else None."""
        if not run:
            return None
        folder = Path(run)
        if folder.parent.resolve() != Path(workdir.name).resolve() or not folder.name.startswith(RUN_PREFIX):
            return None
        out = folder / RUN_OUTPUT
        return out if out.is_dir() else None

    def show_page(run: str | None, page: str | None) -> str:
        """The index or one input's report of the visitor's own run (nothing outside its output folder)."""
        out = run_output(run)
        if out is None:
            return "<p>Annotate some videos first (the demo keeps only the last few runs).</p>"
        page = page or INDEX_PAGE
        target = (out / page).resolve()
        if (
            not (page == INDEX_PAGE or re.fullmatch(r"[^/\\]+/report\.html", page))
            or not target.is_relative_to(out.resolve())
            or not target.is_file()
        ):
            return f"<p>No page {html.escape(page)} in this run.</p>"
        return _inline_page(out, target)

    def annotate(
        files: list[str] | str | None,
        fps: float,
        modalities: list[str] | None,
        blur: bool = False,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio finds the tracker by this default)
    ) -> tuple[Any, str | None, str, Any, str, str | None]:
        """Videos -> (summary table, zip of the output folder, index page, page choices, status, run folder)."""
        paths = [str(f) for f in (files if isinstance(files, list) else [files]) if f] if files else []
        if not paths:
            return None, None, "", gr.update(choices=[], value=None), "Upload videos first (or try the sample).", None
        if len(paths) > MAX_ANNOTATE_FILES:
            raise gr.Error(f"at most {MAX_ANNOTATE_FILES} files per run; got {len(paths)}")
        if fps is None or not math.isfinite(float(fps)):
            raise gr.Error(f"frames per second must be a number from 0.5 to 10, got {fps}")
        try:
            picked = cast("tuple[Any, ...]", tuple(modalities or ()))
            settings = AnnotateSettings(fps=float(fps), modalities=picked, blur_faces=bool(blur))
        except ValueError as exc:
            raise gr.Error(str(exc)) from exc
        run = _new_run(workdir.name)  # the oldest runs go: the folder keeps a few at most
        out = run / RUN_OUTPUT
        outcomes: list[tuple[str, str | None, str]] = []  # per upload: (path, video id when done, failure)
        for k, path in enumerate(paths):
            name = Path(path).name
            progress((k, len(paths)), desc=f"{name} ({k + 1} of {len(paths)})", unit="files")
            if Path(path).suffix.lower() == ".txt" or not Path(path).is_file():
                # annotate reads a .txt file as a list of paths: an upload never names files on the server
                outcomes.append((path, None, f"{name}: not a video or audio file"))
                continue
            try:
                report = annotate_files([path], out, settings, analyzer=analyzer)
            except AffectLensError as exc:  # the run as a whole failed (the folder, missing weights)
                raise gr.Error(_strip_folder(str(exc), path)) from exc
            ids = report.done + report.skipped  # skipped: the same file uploaded twice
            outcomes.append((path, ids[0] if ids else None, "; ".join(r for _, r in report.failed) or "failed"))
        progress((len(paths), len(paths)), desc="zipping the outputs", unit="files")
        try:
            annotations = load_annotations(out) if any(vid for _, vid, _ in outcomes) else None
        except AffectLensError as exc:
            raise gr.Error(str(exc)) from exc
        rows = []
        for path, vid, reason in outcomes:
            name = Path(path).name
            row: list[Any] = _annotated_row(name, vid, annotations) if vid else [name, "failed", None, "—", reason]
            rows.append([*row[:-1], _strip_folder(row[-1], path)])
        done = sum(vid is not None for _, vid, _ in outcomes)
        status = f"{done} of {len(paths)} input(s) annotated" + (
            f", {len(paths) - done} failed" if done < len(paths) else ""
        )
        if not out.is_dir():
            return rows, None, "", gr.update(choices=[], value=None), status + ".", None
        archive = _zip_folder(out, run / f"affectlens-annotations-{time.strftime('%Y%m%d-%H%M%S')}.zip")
        pages = {INDEX_PAGE: "All inputs (index)"}
        for path, vid, _ in outcomes:
            if vid and (out / vid / "report.html").is_file():
                pages[f"{vid}/report.html"] = f"{Path(path).name}: report"
        choices = [(label, page) for page, label in pages.items()]
        status += ". The zip holds the tables (`affectlens.load_annotations` reads them), manifest and reports."
        return (
            rows, str(archive), show_page(str(run), INDEX_PAGE), gr.update(choices=choices, value=INDEX_PAGE),
            status, str(run),
        )  # fmt: skip

    makers: dict[str, Any] = {}  # built on first use: the demo starts without loading the generators

    def create_images(
        emotion: str, second: str, share: float, seed: float | None, count: float, guidance: float
    ) -> tuple[list[Any], dict[str, Any]]:
        from affectlens import ImageGenerator

        if not math.isfinite(count):  # NaN passes the slider's bounds check
            raise gr.Error(f"the number of images must be a whole number from 1 to 8, got {count}")
        mixture = {emotion: 1.0 - float(share), second: float(share)} if second not in ("(none)", emotion) else emotion
        try:
            if "image" not in makers:
                makers["image"] = ImageGenerator()
            generator = makers["image"]
            first = int(seed or 0)
            made = [generator.generate(mixture, seed=first + i, guidance=float(guidance)) for i in range(int(count))]
        except AffectLensError as exc:
            raise gr.Error(str(exc)) from exc
        info = {**made[0].to_dict(), "seeds": [m.seed for m in made], "seconds": [round(m.seconds, 2) for m in made]}
        return [(m.image, f"seed {m.seed}") for m in made], info

    def edit_portrait(image: np.ndarray | None, emotion: str, strength: float) -> tuple[Any, dict[str, Any], str]:
        from affectlens import build_expression_editor

        if image is None:
            return None, {}, "Give a portrait with one face."
        try:
            if "edit" not in makers:
                makers["edit"] = build_expression_editor()
            result = makers["edit"].edit(image, emotion, strength=float(strength))
        except AffectLensError as exc:
            return None, {}, f"Error: {exc}"
        info = {"target": emotion, **result.to_dict()}
        reading = result.reading
        status = f"Target **{emotion}**" + (
            f"; our expression model reads **{reading.label}** ({reading.confidence:.0%})." if reading else "."
        )
        return result.image, info, status

    def talking_head_for(engine: str) -> Any:
        """The shared talking head (built on first use) speaking with ``engine``."""
        from affectlens import TalkingHead, build_talking_head

        if "talking_head" not in makers:
            makers["talking_head"] = build_talking_head()
        head = makers["talking_head"]
        if engine != head.engine:  # same models, another voice
            head = TalkingHead(head.editor, head.texture, cast("EngineChoice", engine), head.fps, head.texture_gain)
        return head

    def talking_head(
        image: np.ndarray | None, text: str | None, emotion: str, intensity: float, engine: str = "auto"
    ) -> tuple[str, str, dict[str, Any]]:
        """A portrait speaks ``text`` -> (MP4 path, chain of thought as Markdown, details as JSON)."""
        if image is None:
            raise gr.Error("Give a portrait with one face.")
        if not text or not text.strip():
            raise gr.Error("Type what the portrait should say.")
        if problem := _not_unicode(text):
            raise gr.Error(problem)
        if engine not in SPEECH_ENGINES:
            raise gr.Error(f"unknown speech engine {engine!r}; choose {', '.join(SPEECH_ENGINES)}")
        out = _new_video(workdir.name, "talking-head-")
        try:
            head = talking_head_for(engine)
            video = head.speak(image, text, None if emotion == FROM_TEXT else emotion, float(intensity))
            timing = video.write(out)
        except AffectLensError as exc:
            out.unlink(missing_ok=True)
            raise gr.Error(str(exc)) from exc
        info = {**video.to_dict(), "timing": {k: round(float(v), 3) for k, v in timing.items()}}
        source = "read from the text" if emotion == FROM_TEXT else "chosen"
        return str(out), _talking_head_summary(info, source), info

    def new_conversation() -> Any:
        from affectlens import Conversation
        from fusion.memory import EmotionalMemory, shared_sentence_embedder
        from fusion.strategy import load_strategy_planner

        if "planner" not in makers:  # shared by every visitor's conversation; the memory is per conversation
            makers["planner"] = load_strategy_planner(text_model=analyzer.text)
            makers["embedder"] = shared_sentence_embedder()
        return Conversation(analyzer=analyzer, planner=makers["planner"], memory=EmotionalMemory(makers["embedder"]))

    def chat_turn(
        chat: Any, history: list[dict[str, Any]] | None, text: str | None, image: np.ndarray | None, audio: str | None
    ) -> tuple[Any, list[dict[str, Any]], str, str, Any, str, str]:
        """One conversation turn -> (state, chat history, tree, strategies, affect trajectory, cleared text, status)."""
        history = list(history or [])
        typed = text.strip() if text and text.strip() else None
        if typed is None and image is None and not audio:
            return chat, history, "", "", None, text or "", "Type a message (a photo or a voice note may come with it)."
        if problem := _not_unicode(typed):
            return chat, history, "", "", None, text or "", f"Error: {problem}"
        chat = chat if chat is not None else new_conversation()
        try:
            turn = chat.send(typed, image=image, audio=audio or None)
        except (AffectLensError, ValueError) as exc:
            return chat, history, "", "", None, text or "", f"Error: {exc}"
        extras = " ".join(x for x, given in (("(photo)", image is not None), ("(voice note)", bool(audio))) if given)
        history += [
            {"role": "user", "content": " ".join(x for x in (typed, extras) if x) or "…"},
            {"role": "assistant", "content": turn.reply},
        ]
        plan = "\n".join(f"- **{s}** ({p:.0%}): {why}" for s, why, p in turn.strategies) or "-"
        states = chat.tracker.trajectory(chat.user_id) if chat.tracker is not None else []
        rows = [(st.turn, dim, getattr(st, dim)) for st in states for dim in ("valence", "arousal", "dominance")]
        trajectory = pd.DataFrame(rows, columns=["turn", "dimension", "value"])
        status = f"{turn.trajectory}" + (f" · remembered: {turn.recollection}" if turn.recollection else "")
        return chat, history, turn.tree.render(), plan, trajectory, "", status

    def speak_reply(chat: Any, speak: bool, spoken: int | None) -> tuple[str | None, int | None]:
        """The last turn's reply spoken by the sample portrait (once per turn; a safety reply with a calm face)."""
        if not speak or chat is None or not chat.turns or chat.turns[-1].index == spoken:
            return None, spoken
        if chat.animator is None:
            chat.animator = talking_head_for("auto")
        out = _new_video(workdir.name, "reply-")
        try:
            chat.talking_head(PORTRAIT, out)
        except AffectLensError as exc:
            out.unlink(missing_ok=True)
            raise gr.Error(str(exc)) from exc
        return str(out), chat.turns[-1].index

    # Gradio keeps every upload and served output in its cache: files older than an hour go, checked hourly.
    with gr.Blocks(title="AffectLens", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# AffectLens\nFaces, voices and words — offline, on a CPU. Each face gets a box, its 468-point "
            "mesh and a distribution over the canonical emotions; each utterance its transcript, voice emotion, "
            "prosody and the emotion in its words."
        )
        with gr.Tab("Analyze"):
            with gr.Tab("Image"):
                with gr.Row():
                    image_in = gr.Image(
                        type="numpy", label="Image", sources=["upload", "webcam", "clipboard"], elem_id="image-in"
                    )
                    image_out = gr.Image(type="numpy", label="Faces", interactive=False)
                with gr.Row():
                    image_btn = gr.Button("Analyze image", variant="primary", elem_id="image-btn")
                    image_blur = gr.Checkbox(value=False, label="Blur faces in the output (privacy)")
                image_status = gr.Markdown(elem_id="image-status")
                with gr.Row():
                    image_label = gr.Label(
                        label="Expression (quality-weighted mean)", num_top_classes=7, elem_id="image-label"
                    )
                    image_json = gr.JSON(label="Result")
                gr.Examples(examples=[[str(PORTRAIT)]], inputs=[image_in])
                image_btn.click(
                    analyze_image,
                    inputs=[image_in, image_blur],
                    outputs=[image_out, image_label, image_json, image_status],
                    api_name="analyze_image",
                )
            with gr.Tab("Webcam (live)"):
                gr.Markdown(
                    f"Your webcam, read live: each face gets its box, expression and strongest action units. About "
                    f"{1 / STREAM_EVERY:g} frames a second go to the server, which answers as fast as its CPU allows; "
                    f"each start streams for up to {STREAM_TIME_LIMIT} s."
                )
                with gr.Row():
                    webcam_in = gr.Image(
                        type="numpy", label="Webcam", sources=["webcam"], streaming=True, elem_id="webcam-in"
                    )
                    webcam_out = gr.Image(type="numpy", label="Faces (live)", interactive=False, elem_id="webcam-out")
                webcam_blur = gr.Checkbox(value=False, label="Blur faces in the output (privacy)")
                webcam_in.stream(
                    analyze_stream,
                    inputs=[webcam_in, webcam_blur],
                    outputs=webcam_out,
                    stream_every=STREAM_EVERY,
                    time_limit=STREAM_TIME_LIMIT,
                    concurrency_limit=1,  # one frame at a time on a small CPU; later frames wait for it
                    concurrency_id="webcam",
                    api_name="analyze_stream",
                )
            with gr.Tab("Video"):
                with gr.Row():
                    video_in = gr.Video(label="Video", sources=["upload"])
                    video_out = gr.Video(label="Annotated", interactive=False)
                with gr.Row():
                    video_btn = gr.Button("Analyze video", variant="primary")
                    video_sample = gr.Button("Try the sample video")
                    video_blur = gr.Checkbox(value=False, label="Blur faces in the output (privacy)")
                video_status = gr.Markdown()
                with gr.Row():
                    video_label = gr.Label(label="Expression (quality-weighted mean)", num_top_classes=7)
                    video_json = gr.JSON(label="Result")
                video_btn.click(
                    analyze_video,
                    inputs=[video_in, video_blur],
                    outputs=[video_out, video_label, video_json, video_status],
                    api_name="analyze_video",
                )
                video_sample.click(sample_video, outputs=video_in, api_visibility="private").then(
                    analyze_video,
                    inputs=[video_in, video_blur],
                    outputs=[video_out, video_label, video_json, video_status],
                    api_visibility="private",
                )
            with gr.Tab("Audio"):
                audio_in = gr.Audio(type="filepath", sources=["upload", "microphone"], label="Speech")
                audio_btn = gr.Button("Analyze audio", variant="primary")
                audio_status = gr.Markdown()
                audio_table = gr.Dataframe(headers=UTTERANCE_COLUMNS, label="Utterances", interactive=False)
                with gr.Row():
                    audio_label = gr.Label(label="Voice emotion (mean over utterances)", num_top_classes=7)
                    audio_json = gr.JSON(label="Result")
                audio_btn.click(
                    analyze_audio,
                    inputs=audio_in,
                    outputs=[audio_table, audio_label, audio_json, audio_status],
                    api_name="analyze_audio",
                )
            with gr.Tab("Text"):
                text_in = gr.Textbox(label="Text", lines=3, placeholder="How are you feeling?")
                text_btn = gr.Button("Analyze text", variant="primary")
                text_va = gr.Markdown()
                with gr.Row():
                    text_label = gr.Label(label="Emotion", num_top_classes=7)
                    text_fine = gr.Label(label="GoEmotions labels (top 5)", num_top_classes=5)
                text_words = gr.HighlightedText(label="Words that drove it", combine_adjacent=False)
                text_json = gr.JSON(label="Result")
                gr.Examples(examples=[["I finally passed my exam, I'm so relieved and happy!"]], inputs=[text_in])
                text_btn.click(
                    analyze_text,
                    inputs=text_in,
                    outputs=[text_label, text_fine, text_words, text_json, text_va],
                    api_name="analyze_text",
                )
            with gr.Tab("Moment (tree)"):
                gr.Markdown(
                    "A photo, a voice note and what the person typed, read together: the affective tree "
                    "(attributes → expressions → emotion → cause → appraisal → strategy → reply)."
                )
                with gr.Row():
                    moment_image = gr.Image(type="numpy", label="Photo", sources=["upload", "webcam", "clipboard"])
                    moment_audio = gr.Audio(type="filepath", sources=["upload", "microphone"], label="Voice")
                moment_text = gr.Textbox(label="Typed text", lines=2, placeholder="What happened?")
                moment_btn = gr.Button("Read the moment", variant="primary")
                moment_status = gr.Markdown()
                with gr.Row():
                    moment_tree = gr.Textbox(label="Affective tree", lines=22, interactive=False)
                    moment_label = gr.Label(label="Fused emotion", num_top_classes=7)
                moment_json = gr.JSON(label="Tree (JSON, affectlens/schema/tree.schema.json)")
                gr.Examples(
                    examples=[[str(PORTRAIT), None, "I got the job! I still can't believe it."]],
                    inputs=[moment_image, moment_audio, moment_text],
                )
                moment_btn.click(
                    analyze_moment,
                    inputs=[moment_image, moment_audio, moment_text],
                    outputs=[moment_tree, moment_label, moment_json, moment_status],
                    api_name="analyze_moment",
                )
        with gr.Tab("Annotate"):
            gr.Markdown(
                "Several videos (or audio files) annotated at once, as `affectlens annotate` does: per input a table "
                "of faces per analysed frame, one of utterances and a per-person timeline, with an HTML report "
                f"(plots and key frames). Everything comes back as one zip. At most {MAX_ANNOTATE_FILES} files per "
                f"run, {MAX_UPLOAD} each."
            )
            with gr.Row():
                annotate_in = gr.File(
                    label="Videos", file_count="multiple", file_types=["video", "audio"], type="filepath",
                    elem_id="annotate-in",
                )  # fmt: skip
                with gr.Column():
                    annotate_fps = gr.Slider(
                        0.5, 10.0, value=ANNOTATE_FPS, step=0.5, label="Frames analysed per second"
                    )
                    annotate_modalities = gr.CheckboxGroup(list(MODALITIES), value=list(MODALITIES), label="Modalities")
                    annotate_blur = gr.Checkbox(value=False, label="Blur faces in the key frames (privacy)")
            with gr.Row():
                annotate_btn = gr.Button("Annotate", variant="primary", elem_id="annotate-btn")
                annotate_sample = gr.Button("Try the sample video", elem_id="annotate-sample")
            annotate_status = gr.Markdown(elem_id="annotate-status")
            annotate_table = gr.Dataframe(
                headers=ANNOTATE_COLUMNS, label="Inputs", interactive=False, elem_id="annotate-table"
            )
            annotate_zip = gr.File(label="All outputs (zip)", interactive=False, elem_id="annotate-zip")
            annotate_page = gr.Dropdown([], label="Page", allow_custom_value=True, elem_id="annotate-page")
            annotate_html = gr.HTML(elem_id="annotate-report")
            annotate_run = gr.State(None)
            annotate_inputs = [annotate_in, annotate_fps, annotate_modalities, annotate_blur]
            annotate_outputs = [
                annotate_table,
                annotate_zip,
                annotate_html,
                annotate_page,
                annotate_status,
                annotate_run,
            ]
            annotate_btn.click(
                annotate,
                inputs=annotate_inputs,
                outputs=annotate_outputs,
                concurrency_limit=1,
                concurrency_id="annotate",
                api_name="annotate",
            )
            annotate_sample.click(sample_upload, outputs=annotate_in, api_visibility="private").then(
                annotate, inputs=annotate_inputs, outputs=annotate_outputs, concurrency_limit=1,
                concurrency_id="annotate", api_visibility="private",
            )  # fmt: skip
            annotate_page.input(
                show_page, inputs=[annotate_run, annotate_page], outputs=annotate_html, api_visibility="private"
            )
        with gr.Tab("Conversation"):
            gr.Markdown(
                "An empathic conversation with an AI (not a person, not a crisis service). Each turn is read as one "
                "moment (words, and a photo or a voice note if you add one); the reply follows planned support "
                "strategies, and your affect state (valence, arousal, dominance) is tracked across turns."
            )
            chat_state = gr.State(None)
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label="Conversation", height=360, elem_id="chatbot")
                    chat_text = gr.Textbox(
                        label="Message", lines=2, placeholder="What's on your mind?", elem_id="chat-text"
                    )
                    with gr.Row():
                        chat_image = gr.Image(type="numpy", label="Photo (optional)", sources=["upload", "webcam"])
                        chat_audio = gr.Audio(
                            type="filepath", sources=["upload", "microphone"], label="Voice (optional)"
                        )
                    with gr.Row():
                        chat_btn = gr.Button("Send", variant="primary", elem_id="chat-btn")
                        chat_speak = gr.Checkbox(value=False, label="Speak the reply (talking head)")
                    chat_status = gr.Markdown(elem_id="chat-status")
                    chat_video = gr.Video(label="The reply, spoken", interactive=False)
                    chat_spoken = gr.State(None)
                with gr.Column(scale=2):
                    chat_plan = gr.Markdown(label="Strategies")
                    chat_affect = gr.LinePlot(
                        x="turn", y="value", color="dimension", y_lim=[-1, 1], label="Affect trajectory", height=220
                    )
                    chat_tree = gr.Textbox(
                        label="Affective tree of the last turn", lines=18, interactive=False, elem_id="chat-tree"
                    )
            gr.Examples(examples=[["I failed my driving test again and I feel like an idiot."]], inputs=[chat_text])
            chat_btn.click(
                chat_turn,
                inputs=[chat_state, chatbot, chat_text, chat_image, chat_audio],
                outputs=[chat_state, chatbot, chat_tree, chat_plan, chat_affect, chat_text, chat_status],
                api_name="chat",
            ).then(
                speak_reply,
                inputs=[chat_state, chat_speak, chat_spoken],
                outputs=[chat_video, chat_spoken],
                api_name="speak_reply",
            )
        with gr.Tab("Create"):
            with gr.Tab("Emotion image"):
                gr.Markdown(
                    "Faces drawn by AffectLens' own small diffusion model (trained on FER2013, offline), guided "
                    "towards an emotion or a mixture of two. Same seed, same faces."
                )
                with gr.Row():
                    create_emotion = gr.Dropdown(list(CANONICAL_EMOTIONS), value="happiness", label="Emotion")
                    create_second = gr.Dropdown(["(none)", *CANONICAL_EMOTIONS], value="(none)", label="Mixed with")
                    create_mix = gr.Slider(0.0, 0.5, value=0.3, step=0.05, label="Share of the second emotion")
                with gr.Row():
                    create_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    create_count = gr.Slider(1, 8, value=4, step=1, label="Images", elem_id="create-count")
                    create_guidance = gr.Slider(
                        0.0, 16.0, value=face_guidance_default(), step=0.5, label="Guidance (default: as judged)"
                    )
                create_btn = gr.Button("Generate", variant="primary", elem_id="create-btn")
                create_gallery = gr.Gallery(label="Generated", columns=4, height="auto", elem_id="create-gallery")
                create_info = gr.JSON(label="How they were made", elem_id="create-info")
                create_btn.click(
                    create_images,
                    inputs=[create_emotion, create_second, create_mix, create_seed, create_count, create_guidance],
                    outputs=[create_gallery, create_info],
                    api_name="generate_image",
                )
            with gr.Tab("Expression edit"):
                gr.Markdown(
                    "A portrait re-rendered with another expression: the face mesh moves along an action-unit plan "
                    "and the image is warped piece by piece; identity and background stay. Our expression model "
                    "then reads the result."
                )
                with gr.Row():
                    edit_in = gr.Image(
                        type="numpy", label="Portrait (one face)", sources=["upload", "webcam", "clipboard"]
                    )
                    edit_out = gr.Image(type="numpy", label="Edited", interactive=False)
                with gr.Row():
                    edit_emotion = gr.Dropdown(list(CANONICAL_EMOTIONS), value="happiness", label="Target emotion")
                    edit_strength = gr.Slider(0.0, 3.0, value=2.5, step=0.1, label="Strength")
                edit_btn = gr.Button("Edit expression", variant="primary")
                edit_status = gr.Markdown()
                edit_plan = gr.JSON(label="AU plan and check")
                gr.Examples(examples=[[str(PORTRAIT), "surprise"]], inputs=[edit_in, edit_emotion])
                edit_btn.click(
                    edit_portrait,
                    inputs=[edit_in, edit_emotion, edit_strength],
                    outputs=[edit_out, edit_plan, edit_status],
                    api_name="edit_expression",
                )
            with gr.Tab("Talking head"):
                gr.Markdown(
                    "The portrait speaks a reply with an emotion, rendered on the CPU: the emotion is first planned "
                    "as action units over time (onset, apex, offset; a question lifts the brows), the voice is "
                    "synthesised (piper, else eSpeak NG) and drives the lips, and the face mesh is warped frame by "
                    "frame with blinks, small head movements and glances."
                )
                with gr.Row():
                    speak_in = gr.Image(
                        value=str(PORTRAIT), type="numpy", label="Portrait (one face, roughly frontal)",
                        sources=["upload", "webcam", "clipboard"],
                    )  # fmt: skip
                    speak_out = gr.Video(label="Talking head", interactive=False)
                speak_text = gr.Textbox(value=EXAMPLE_REPLY, label="What the portrait says", lines=3)
                with gr.Row():
                    speak_emotion = gr.Dropdown([FROM_TEXT, *CANONICAL_EMOTIONS], value=FROM_TEXT, label="Emotion")
                    speak_intensity = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="Intensity")
                    speak_engine = gr.Dropdown(list(SPEECH_ENGINES), value="auto", label="Voice")
                speak_btn = gr.Button("Speak", variant="primary")
                speak_reasons = gr.Markdown()
                speak_info = gr.JSON(label="Performance, speech and timing")
                speak_btn.click(
                    talking_head,
                    inputs=[speak_in, speak_text, speak_emotion, speak_intensity, speak_engine],
                    outputs=[speak_out, speak_reasons, speak_info],
                    api_name="talking_head",
                )
    demo.affectlens_workdir = workdir  # lives (and is cleaned) with the demo
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, analyzer: Analyzer | None = None) -> None:
    """Build the default analyzer and serve the demo."""
    demo = build_demo(analyzer or Analyzer())
    demo.queue(default_concurrency_limit=2).launch(
        server_name=host, server_port=port, max_file_size=MAX_UPLOAD, show_error=True
    )
