"""``Analyzer``: the public entry point that turns an image, video, audio clip or text (or several of them, of one
moment) into typed results with an affective tree."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from affectlens import __version__
from affectlens.errors import MediaError, WeightsError
from affectlens.registry import (
    create_face_detector,
    create_face_expression,
    create_face_landmarker,
    create_text_emotion,
)
from affectlens.tree import AffectTree
from affectlens.types import AnalysisResult, FrameResult, MediaKind, Utterance
from fusion.tree import Fuser, Planner, TreeWriter, build_tree, default_fuser
from perception.audio import audio_info
from perception.face.gaze import IrisGaze
from perception.face.geometry import FaceGeometry
from perception.face.pipeline import FacePipeline
from perception.face.tracking import FaceTimeline
from perception.media import (
    DEFAULT_LIMITS,
    Frame,
    MediaLimits,
    has_audio_stream,
    iter_video_frames,
    load_image,
    open_media,
    probe,
)

if TYPE_CHECKING:
    from perception.text.emotion import TextEmotionModel
    from perception.voice.pipeline import VoicePipeline

logger = logging.getLogger(__name__)

#: Frames analysed per second of video when the caller does not say.
DEFAULT_VIDEO_FPS = 5.0
#: Longest gap between two face detections in a video; faces are followed with the mesh in between.
KEYFRAME_SECONDS = 0.5
#: Frames whose faces go through the expression and geometry stages in one batch.
VIDEO_BATCH = 8
#: Longest typed text analysed as one utterance; longer text is refused rather than silently cut.
MAX_TEXT_CHARS = 20_000
#: One input: a path (image, video or audio, decided by content) or an image array.
Source = str | os.PathLike[str] | np.ndarray


def build_face_pipeline(
    detector: str = "centerface",
    expression: str | None = None,
    landmarker: str | None = "mediapipe-facemesh",
    fallback: str | None = "haar",
    geometry: bool = True,
) -> FacePipeline:
    """Assemble the default face pipeline from registered names (``None`` leaves a part out; ``expression=None``
    is the registry's default expression model).

    ``geometry`` adds head pose, eye openness, AUs and gaze from the mesh (needs a landmarker).

    If the main detector cannot be built (its runtime is missing), the fallback takes its place.
    """
    fallback_det = create_face_detector(fallback) if fallback else None
    try:
        main = create_face_detector(detector)
    except (ImportError, WeightsError) as exc:
        if fallback_det is None:
            raise
        logger.warning("face detector %r unavailable (%s); using %r", detector, exc, fallback)
        main, fallback_det = fallback_det, None
    return FacePipeline(
        detector=main,
        expression=create_face_expression(expression),
        landmarker=create_face_landmarker(landmarker) if landmarker else None,
        fallback=fallback_det,
        geometry=FaceGeometry() if geometry and landmarker else None,
        gaze=IrisGaze() if geometry and landmarker else None,
    )


def build_text_emotion(name: str | None = None) -> TextEmotionModel:
    """The default text emotion model (MiniLM-L6 + the GoEmotions delta)."""
    return create_text_emotion(name)


class Analyzer:
    """Analyse images, videos, audio and text: faces per frame, utterances with voice and words, and the
    affective tree of the moment.

    Parts are injected (tests pass tiny ones); a part left as ``None`` is built from the defaults on
    first use, so an image-only user never loads the speech models. ``fuser`` pools the modalities (default: the
    shipped late fusion, else its untrained prior), ``planner`` picks the support strategies (default:
    ``fusion.tree.RulePlanner``), ``writer`` writes the tree's prose with a language model (default: none, the
    prose comes from templates).

    Only ``analyze()`` builds the tree; ``analyze_image``/``analyze_video``/``analyze_audio``/``analyze_text`` return
    results without one (the batch annotator calls them and should not pay for it): ``build_tree(result)`` adds it.

    >>> from affectlens import Analyzer
    >>> result = Analyzer().analyze("photo.jpg", text="I got the job!")
    >>> result.tree.emotion.value["label"]
    'happiness'
    """

    def __init__(
        self,
        face: FacePipeline | None = None,
        voice: VoicePipeline | None = None,
        text: TextEmotionModel | None = None,
        limits: MediaLimits = DEFAULT_LIMITS,
        fuser: Fuser | None = None,
        writer: TreeWriter | None = None,
        planner: Planner | None = None,
    ) -> None:
        self._face = face
        self._voice = voice
        self._text = text
        self.limits = limits
        self._fuser = fuser
        self.writer = writer
        self.planner = planner

    @property
    def face(self) -> FacePipeline:
        if self._face is None:
            self._face = build_face_pipeline()
        return self._face

    @property
    def text(self) -> TextEmotionModel:
        if self._text is None:
            self._text = build_text_emotion()
        return self._text

    @property
    def voice(self) -> VoicePipeline:
        if self._voice is None:
            from perception.voice.pipeline import build_voice_pipeline  # loads Whisper: only when audio arrives

            self._voice = build_voice_pipeline(text_emotion=self.text)
        return self._voice

    def set_fuser(self, fuser: Fuser) -> None:
        """Use ``fuser`` for the trees from now on (e.g. ``fusion.reasoner.AdapterReasoner`` or ``LateFusion``)."""
        self._fuser = fuser

    @property
    def fuser(self) -> Fuser:
        if self._fuser is None:
            self._fuser = default_fuser()
        return self._fuser

    def _result(
        self,
        source: str,
        kind: MediaKind,
        frames: list[FrameResult],
        utterances: tuple[Utterance, ...] = (),
        warnings: list[str] | None = None,
        **kwargs: Any,
    ) -> AnalysisResult:
        warnings = list(warnings or [])
        models: dict[str, str | None] = {}
        weights: dict[str, str] = {}
        if kind in ("image", "video"):
            models.update(self.face.describe())
            weights.update(self.face.weight_files())
            if not any(frame.faces for frame in frames):
                warnings.append(f"{source}: no face found")
        if kind in ("audio", "video") and self._voice is not None:
            models.update(self.voice.describe())
            weights.update(self.voice.weight_files())
        if kind == "text":
            models["text_emotion"] = self.text.name
            weights.update(self.text.weight_files)
        if kind == "audio" and not utterances:
            warnings.append(f"{source}: no speech found")
        return AnalysisResult(
            source=source,
            kind=kind,
            frames=tuple(frames),
            utterances=utterances,
            models=models,
            weights=weights,
            warnings=tuple(warnings),
            **kwargs,
        )

    def analyze_image(self, image: str | os.PathLike[str] | np.ndarray, source: str | None = None) -> AnalysisResult:
        """One image (path or HxW[xC] array) -> a one-frame result; ``source`` names an array in the result."""
        if source is None:
            source = "<array>" if isinstance(image, np.ndarray) else str(image)
        rgb = load_image(image, self.limits)
        frame = FrameResult(index=0, time=0.0, faces=self.face(rgb))
        return self._result(
            source, "image", [frame], width=rgb.shape[1], height=rgb.shape[0], fps=None, duration=None,
            settings={"affectlens": __version__},
        )  # fmt: skip

    def analyze_video(
        self,
        path: str | os.PathLike[str],
        fps: float | None = DEFAULT_VIDEO_FPS,
        max_frames: int | None = None,
        on_frame: Callable[[Frame, FrameResult], None] | None = None,
        audio: bool = True,
        keep_landmarks: bool = True,
    ) -> AnalysisResult:
        """Sample ``fps`` frames per second of video (all frames when ``None``) and analyse each; with
        ``audio``, also the sound track's utterances (voice and words).

        ``on_frame(frame, result)`` is called for every analysed frame (e.g. to write an annotated video
        without decoding twice); frames are not kept in memory. With ``keep_landmarks=False`` the result keeps no
        468-point meshes (``on_frame`` still sees them): most of what a long video's result would hold.
        """
        kind, info = probe(path, self.limits)
        if info is None:
            problem = "no video stream (audio only)" if kind == "audio" else "is an image, not a video"
            raise MediaError(str(path), problem)
        warnings: list[str] = []
        frames: list[FrameResult] = []
        # Detect on key frames (KEYFRAME_SECONDS apart) and follow faces with the mesh in between.
        rate = fps if fps else (info.fps or 25.0)
        stream = self.face.stream(keyframe_interval=max(1, round(KEYFRAME_SECONDS * rate)))
        timeline = FaceTimeline(geometry=self.face.geometry)  # ids, smoothing and baselines live for one video
        chunk: list[Frame] = []

        def flush() -> None:
            for frame, faces in zip(chunk, stream([f.image for f in chunk]), strict=True):
                result = FrameResult(index=frame.index, time=frame.time, faces=timeline(frame.image, faces))
                if on_frame is not None:
                    on_frame(frame, result)
                if not keep_landmarks:
                    result = replace(result, faces=tuple(replace(f, landmarks=None) for f in result.faces))
                frames.append(result)
            chunk.clear()

        for frame in iter_video_frames(path, fps=fps, max_frames=max_frames, limits=self.limits, warnings=warnings):
            chunk.append(frame)
            if len(chunk) == VIDEO_BATCH:
                flush()
        flush()
        utterances: tuple[Utterance, ...] = ()
        if audio and has_audio_stream(path):
            utterances = self.voice(path, warnings)
        return self._result(
            str(path), "video", frames, utterances, warnings, width=info.width, height=info.height, fps=info.fps,
            duration=info.duration, settings={"affectlens": __version__, "sample_fps": fps, "max_frames": max_frames},
        )  # fmt: skip

    def analyze_audio(self, path: str | os.PathLike[str]) -> AnalysisResult:
        """An audio file (or any file's sound track): speech segments with transcript, voice and words."""
        warnings: list[str] = []
        utterances = self.voice(path, warnings)
        duration = audio_info(path, self.limits).duration
        return self._result(
            str(path), "audio", [], utterances, warnings, width=None, height=None, fps=None, duration=duration,
            settings={"affectlens": __version__},
        )  # fmt: skip

    def analyze_text(self, text: str, source: str = "<text>") -> AnalysisResult:
        """Typed text as one utterance with its text emotion (canonical, fine labels, salient words)."""
        if not isinstance(text, str):
            raise MediaError(source, f"expected text (a str), got {type(text).__name__}")
        if not text.strip():
            raise MediaError(source, "empty text: nothing to analyse")
        if len(text) > MAX_TEXT_CHARS:
            raise MediaError(source, f"text too long ({len(text)} characters > {MAX_TEXT_CHARS})")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: no tokenizer can read it
            bad = text[exc.start]
            raise MediaError(
                source, f"the text is not valid Unicode (a lone surrogate, U+{ord(bad):04X}, at {exc.start})"
            ) from None
        emotion = self.text.predict([text])[0]
        utterance = Utterance(index=0, start=0.0, end=0.0, text=text, text_emotion=emotion)
        return self._result(
            source, "text", [], (utterance,), width=None, height=None, fps=None, duration=None,
            settings={"affectlens": __version__},
        )  # fmt: skip

    def analyze(
        self,
        source: Source | Sequence[Source] | None = None,
        fps: float | None = DEFAULT_VIDEO_FPS,
        max_frames: int | None = None,
        *,
        text: str | Sequence[str] | None = None,
        tree: bool = True,
    ) -> AnalysisResult:
        """Analyse an image, video or audio path (decided by content, not extension), an image array, typed
        ``text=``, or several of them as one moment, and build the affective tree (``tree=False`` skips it).

        A positional string is always a path; ``text=`` is what the person typed. One input gives that input's
        result; several (a list of sources, and/or a source with ``text=``, or a list of texts) give one
        ``"multimodal"`` result (see ``combine``) with one tree over all of them.
        """
        sources: list[Source] = []
        if isinstance(source, list | tuple):
            sources = list(source)
        elif source is not None:
            sources = [cast(Source, source)]  # a str is a Sequence too: one path
        texts: list[str] = list(text) if isinstance(text, list | tuple) else [] if text is None else [cast(str, text)]
        if not sources and not texts:
            raise ValueError("nothing to analyse: give a path, an image array or text=")
        parts = [self._analyze_source(s, fps, max_frames) for s in sources]
        parts += [self.analyze_text(t) for t in texts]
        result = parts[0] if len(parts) == 1 else self.combine(parts)
        return replace(result, tree=self.build_tree(result)) if tree else result

    def _analyze_source(self, source: Source, fps: float | None, max_frames: int | None) -> AnalysisResult:
        if isinstance(source, np.ndarray):
            return self.analyze_image(source)
        kind, rgb, _ = open_media(source, self.limits)  # refuses anything that is not a path, with a MediaError
        if rgb is not None:
            return self.analyze_image(rgb, source=str(source))
        if kind == "audio":
            return self.analyze_audio(source)
        return self.analyze_video(source, fps=fps, max_frames=max_frames)

    def combine(self, parts: Sequence[AnalysisResult]) -> AnalysisResult:
        """Several results of one moment (e.g. a photo, a voice note and what the person typed) as one
        ``"multimodal"`` result: the parts kept in ``parts``, their frames and utterances concatenated, their
        models, weights and warnings merged. Multimodal parts are unpacked; trees on the parts are dropped."""
        flat = [p for part in parts for p in (part.parts or (part,))]
        if not flat:
            raise ValueError("nothing to combine: give at least one result")
        flat = [replace(p, tree=None) for p in flat]
        models: dict[str, str | None] = {}
        weights: dict[str, str] = {}
        for part in flat:
            models.update({k: v for k, v in part.models.items() if v is not None or k not in models})
            weights.update(part.weights)
        return AnalysisResult(
            source=" + ".join(p.source for p in flat),
            kind="multimodal",
            width=None,
            height=None,
            fps=None,
            duration=None,
            frames=tuple(f for p in flat for f in p.frames),
            models=models,
            weights=weights,
            utterances=tuple(u for p in flat for u in p.utterances),
            settings={"affectlens": __version__, "parts": len(flat)},
            warnings=tuple(w for p in flat for w in p.warnings),
            parts=tuple(flat),
        )

    def build_tree(
        self, results: AnalysisResult | Sequence[AnalysisResult], writer: TreeWriter | None = None
    ) -> AffectTree:
        """The affective tree of ``results`` (one result, a multimodal one, or several parts of one moment) with
        this analyzer's fuser, planner and writer (``writer`` overrides it for this call)."""
        return build_tree(results, fuser=self.fuser, writer=writer or self.writer, planner=self.planner)
