"""Voice pipeline: stream audio, find speech with the VAD, and describe each segment (words, emotion, prosody).

Audio is read in chunks (``perception.audio.iter_audio_chunks``) and only the span a segment may still
need is kept, so memory stays bounded on hour-long files. Segments come out whole across chunk
boundaries and never longer than ``max_segment_seconds`` (the VAD is asked to cut there; anything longer
is split evenly). The parts are injected; ``build_voice_pipeline`` assembles the registered defaults.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from affectlens.registry import create
from affectlens.types import EmotionPrediction, Prosody, TextEmotion, Utterance
from perception.audio import SAMPLE_RATE, AudioChunk, AudioPath, iter_audio_chunks
from perception.voice.prosody import ProsodyAnalyzer
from perception.voice.vad import SpeechSegment

logger = logging.getLogger(__name__)


class VadStreamLike(Protocol):
    keep_from: float

    def feed(self, samples: np.ndarray) -> list[SpeechSegment]: ...

    def flush(self) -> list[SpeechSegment]: ...


class TextEmotionModel(Protocol):
    name: str

    def predict(self, texts: list[str]) -> list[TextEmotion]: ...


@dataclass(frozen=True)
class _Segment:
    start: float
    end: float
    audio: np.ndarray


class VoicePipeline:
    """Wires injected parts; builds nothing itself.

    ``vad`` needs ``stream(offset=..., max_speech_s=...)`` returning an object with ``feed``, ``flush`` and
    ``keep_from`` (see ``perception.voice.vad.VadStream``). ``asr`` needs ``transcribe(audio) -> str``;
    ``speech_emotion`` needs ``predict_batch(audios) -> list[EmotionPrediction]``. When the speech-emotion
    model's ``encoder`` is the very ``asr`` object and it has ``predict_encoded``, the encoder runs once per
    segment (``asr.transcribe_and_encode``). ``text_emotion``, when given, scores each non-empty transcript.
    ``asr`` and ``speech_emotion`` may be ``None`` to skip them.
    """

    def __init__(
        self,
        vad: Any,
        asr: Any | None,
        speech_emotion: Any | None,
        prosody: bool | ProsodyAnalyzer = True,
        text_emotion: TextEmotionModel | None = None,
        chunk_seconds: float = 30.0,
        max_segment_seconds: float = 30.0,
    ) -> None:
        if not max_segment_seconds > 0 or not chunk_seconds > 0:
            raise ValueError("chunk_seconds and max_segment_seconds must be positive")
        self.vad = vad
        self.asr = asr
        self.speech_emotion = speech_emotion
        self.prosody: ProsodyAnalyzer | None = (
            prosody if isinstance(prosody, ProsodyAnalyzer) else (ProsodyAnalyzer() if prosody else None)
        )
        self.text_emotion = text_emotion
        self.chunk_seconds = chunk_seconds
        self.max_segment_seconds = max_segment_seconds

    def describe(self) -> dict[str, str | None]:
        """Names of the parts, for provenance."""

        def name(part: Any) -> str | None:
            return None if part is None else str(part.name)

        return {
            "vad": name(self.vad),
            "asr": name(self.asr),
            "speech_emotion": name(self.speech_emotion),
            "prosody": name(self.prosody),
            "text_emotion": name(self.text_emotion),
        }

    def weight_files(self) -> dict[str, str]:
        """``{manifest name: sha256}`` of every weight file the parts loaded."""
        parts = (self.vad, self.asr, self.speech_emotion, self.text_emotion)
        return {k: v for part in parts if part is not None for k, v in getattr(part, "weight_files", {}).items()}

    def __call__(self, path: AudioPath, warnings: list[str] | None = None) -> tuple[Utterance, ...]:
        """Every utterance in the audio of ``path`` (an audio file or a video's sound track), in time order."""
        return tuple(self.iter_utterances(path, warnings))

    def iter_utterances(self, path: AudioPath, warnings: list[str] | None = None) -> Iterator[Utterance]:
        """Utterances of ``path`` as soon as each is known (see ``__call__``)."""
        chunks = iter_audio_chunks(path, self.chunk_seconds, warnings=warnings)
        with contextlib.closing(chunks):
            yield from self._run(chunks)

    def analyze_audio(self, audio: np.ndarray, start: float = 0.0) -> tuple[Utterance, ...]:
        """Utterances of an in-memory 16 kHz mono float32 clip ``(n,)``; times are seconds from ``start``."""
        audio = np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0)
        step = round(self.chunk_seconds * SAMPLE_RATE)
        chunks = (AudioChunk(start + i / SAMPLE_RATE, audio[i : i + step]) for i in range(0, len(audio), step))
        return tuple(self._run(chunks))

    def _run(self, chunks: Iterable[AudioChunk]) -> Iterator[Utterance]:
        stream: VadStreamLike | None = None
        origin = 0.0  # time of the first sample
        buffer = np.zeros(0, np.float32)
        buffer_start = 0  # index of buffer[0] in samples since ``origin``
        index = 0
        for chunk in chunks:
            if stream is None:
                origin = chunk.start
                stream = self.vad.stream(offset=origin, max_speech_s=self.max_segment_seconds)
            buffer = np.concatenate([buffer, chunk.samples])
            found = stream.feed(chunk.samples)
            for utterance in self._describe(self._cut(found, buffer, buffer_start, origin), index):
                index += 1
                yield utterance
            keep = max(buffer_start, math.floor((stream.keep_from - origin) * SAMPLE_RATE))
            buffer = buffer[keep - buffer_start :]
            buffer_start = keep
        if stream is None:
            return
        for utterance in self._describe(self._cut(stream.flush(), buffer, buffer_start, origin), index):
            index += 1
            yield utterance

    def _cut(self, found: list[SpeechSegment], buffer: np.ndarray, buffer_start: int, origin: float) -> list[_Segment]:
        """The audio of each segment, split evenly into pieces of at most ``max_segment_seconds``."""
        out: list[_Segment] = []
        for seg in found:
            first = round((seg.start - origin) * SAMPLE_RATE)
            last = round((seg.end - origin) * SAMPLE_RATE)
            if first < buffer_start:
                logger.warning("segment %.2f-%.2f s starts before the kept audio; trimmed", seg.start, seg.end)
                first = buffer_start
            last = min(last, buffer_start + len(buffer))
            if last <= first:
                continue
            pieces = math.ceil((last - first) / (self.max_segment_seconds * SAMPLE_RATE))
            bounds = np.linspace(first, last, pieces + 1).round().astype(int)
            for a, b in itertools.pairwise(bounds):
                out.append(
                    _Segment(
                        origin + a / SAMPLE_RATE, origin + b / SAMPLE_RATE, buffer[a - buffer_start : b - buffer_start]
                    )
                )
        return out

    def _shares_encoder(self) -> bool:
        se = self.speech_emotion
        return (
            se is not None
            and getattr(se, "encoder", None) is self.asr
            and hasattr(self.asr, "transcribe_and_encode")
            and hasattr(se, "predict_encoded")
        )

    def _describe(self, segments: list[_Segment], first_index: int) -> list[Utterance]:
        """Transcript, speech emotion, prosody and text emotion of each segment (model calls batched)."""
        if not segments:
            return []
        audios = [s.audio for s in segments]
        prosody: list[Prosody | None] = [self.prosody(a) if self.prosody else None for a in audios]
        texts: list[str | None] = [None] * len(segments)
        emotions: list[EmotionPrediction | None] = [None] * len(segments)
        features: list[np.ndarray | None] = [None] * len(segments)
        if self._shares_encoder():
            assert self.asr is not None and self.speech_emotion is not None
            se = self.speech_emotion
            encoded = [self.asr.transcribe_and_encode(a) for a in audios]
            texts = [text for text, _ in encoded]
            if hasattr(se, "features") and hasattr(se, "predict_features"):  # keep the head's input for fusion
                pooled = [se.features(f, a, p) for (_, f), a, p in zip(encoded, audios, prosody, strict=True)]
                emotions = list(se.to_predictions(se.predict_features(np.stack(pooled))))
                features = list(pooled)
            else:
                emotions = list(se.predict_encoded([f for _, f in encoded], audios, prosody))
        else:
            if self.asr is not None:
                texts = [self.asr.transcribe(a) for a in audios]
            if self.speech_emotion is not None:
                emotions = list(self.speech_emotion.predict_batch(audios))
        text_emotions: list[TextEmotion | None] = [None] * len(segments)
        if self.text_emotion is not None:
            spoken = [i for i, t in enumerate(texts) if t]
            if spoken:
                scored = self.text_emotion.predict([texts[i] or "" for i in spoken])
                for i, te in zip(spoken, scored, strict=True):
                    text_emotions[i] = te
        return [
            Utterance(
                index=first_index + k,
                start=seg.start,
                end=seg.end,
                text=texts[k],
                speech_emotion=emotions[k],
                text_emotion=text_emotions[k],
                prosody=prosody[k],
                voice_features=features[k],
            )
            for k, seg in enumerate(segments)
        ]


def build_voice_pipeline(
    vad: str | None = None,
    asr: str | None = None,
    speech_emotion: str | None = None,
    text_emotion: str | TextEmotionModel | None = None,
    prosody: bool = True,
    model_paths: dict[str, str | Path] | None = None,
) -> VoicePipeline:
    """The registered defaults (or the named components), with the speech-emotion model sharing the ASR's
    Whisper encoder when it was trained on the same one (speech-emotion builders take ``encoder=`` and
    raise ``ValueError`` for an encoder they cannot use). ``model_paths`` maps a kind to an explicit path;
    ``text_emotion`` is a registered name or an already built model (shared with the text analysis)."""
    paths = {k: str(v) for k, v in (model_paths or {}).items()}

    def kw(kind: str) -> dict[str, Any]:
        return {"model_path": paths[kind]} if kind in paths else {}

    vad_part = create("vad", vad, **kw("vad"))
    asr_part = create("asr", asr, **kw("asr"))
    try:  # one Whisper model in memory and one encoder pass per segment
        probe = create("speech_emotion", speech_emotion, encoder=asr_part, **kw("speech_emotion"))
    except ValueError:  # the head was trained on another encoder than this ASR's: it loads its own
        probe = create("speech_emotion", speech_emotion, **kw("speech_emotion"))
    text_part = (
        create("text_emotion", text_emotion, **kw("text_emotion")) if isinstance(text_emotion, str) else text_emotion
    )
    return VoicePipeline(vad_part, asr_part, probe, prosody=prosody, text_emotion=text_part)
