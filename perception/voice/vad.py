"""Voice activity detection: Silero VAD (ONNX, onnxruntime) turned into speech segments, streamed across chunks.

The model scores 32 ms windows (512 samples at 16 kHz, with the previous 64 samples as context) and keeps
a recurrent state; ``SileroVAD.stream()`` carries that state, the context and the segmentation state from
one audio chunk to the next, so segments that cross chunk boundaries come out whole. The segmentation
follows ``silero_vad.get_speech_timestamps`` (threshold with hysteresis, minimum speech and silence,
padding, and a maximum length cut at the longest pause).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectlens import weights
from affectlens.registry import register
from perception.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

#: Samples per model window at 16 kHz, and the context samples prepended to each.
WINDOW = 512
CONTEXT = 64


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of speech in seconds from the start of the stream."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class VadConfig:
    """Segmentation settings, as in ``silero_vad.get_speech_timestamps``.

    ``threshold``: a window is speech at or above this probability; ``neg_threshold`` (default
    ``threshold - 0.15``): in speech, a window below it starts a pause. A pause of ``min_silence_ms`` ends
    a segment; segments shorter than ``min_speech_ms`` are dropped; ``speech_pad_ms`` is added on both sides
    (pauses shorter than twice the padding are split between neighbours). Segments longer than
    ``max_speech_s`` are cut at their longest inner pause of at least ``min_silence_at_max_speech_ms``,
    else hard-cut.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_ms: float = 250.0
    min_silence_ms: float = 100.0
    speech_pad_ms: float = 30.0
    max_speech_s: float = math.inf
    min_silence_at_max_speech_ms: float = 98.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.max_speech_s <= 0:
            raise ValueError(f"max_speech_s must be positive, got {self.max_speech_s}")


@dataclass
class _Open:
    start: int
    temp_end: int = 0
    possible_ends: list[tuple[int, int]] = field(default_factory=list)  # (pause start, pause length)


class VadStream:
    """Feed consecutive 16 kHz chunks; get finished segments as soon as they are certain.

    Times are seconds from the first sample fed plus ``offset``. ``keep_from`` is the earliest second a
    segment not yet returned can start: audio before it may be dropped by the caller.
    """

    def __init__(self, vad: SileroVAD, config: VadConfig, offset: float = 0.0) -> None:
        self._vad = vad
        self.config = config
        self.offset = offset
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._rest = np.zeros(0, np.float32)
        self._pos = 0  # samples scored so far (a multiple of WINDOW)
        self._fed = 0  # samples fed so far
        self._open: _Open | None = None
        self._pending: tuple[int, int] | None = None  # a closed segment awaiting its end padding
        self._last_end = 0  # padded end of the last returned segment, in samples
        sr = SAMPLE_RATE
        c = config
        self._neg = c.neg_threshold if c.neg_threshold is not None else max(c.threshold - 0.15, 0.01)
        self._pad = int(sr * c.speech_pad_ms / 1000)
        self._min_speech = sr * c.min_speech_ms / 1000
        self._min_silence = sr * c.min_silence_ms / 1000
        self._min_silence_max = sr * c.min_silence_at_max_speech_ms / 1000
        self._max_speech = sr * c.max_speech_s - WINDOW - 2 * self._pad

    @property
    def keep_from(self) -> float:
        earliest = self._pos - WINDOW
        if self._open is not None:
            earliest = min(earliest, self._open.start)
        if self._pending is not None:
            earliest = min(earliest, self._pending[0])
        return self.offset + max(0, max(self._last_end, earliest - self._pad)) / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[SpeechSegment]:
        """Score ``samples`` (float32, shape ``(n,)``) and return the segments that ended within them."""
        audio = np.concatenate([self._rest, np.asarray(samples, np.float32).reshape(-1)])
        self._fed += len(samples)
        usable = len(audio) // WINDOW * WINDOW
        self._rest = audio[usable:]
        out: list[SpeechSegment] = []
        if usable:
            for prob in self._vad.score(audio[:usable], self):
                out.extend(self._step(prob))
        return out

    def flush(self) -> list[SpeechSegment]:
        """Score the remaining samples (zero-padded to a window) and close any open segment."""
        out: list[SpeechSegment] = []
        if len(self._rest):
            last = np.zeros(WINDOW, np.float32)
            last[: len(self._rest)] = self._rest
            self._rest = np.zeros(0, np.float32)
            for prob in self._vad.score(last, self):
                out.extend(self._step(prob))
        total = self._fed
        if self._open is not None and total - self._open.start > self._min_speech:
            out.extend(self._close(self._open.start, total))
        self._open = None
        if self._pending is not None:
            start, end = self._pending
            self._pending = None
            out.append(self._emit(start, min(total, end + self._pad)))
        return out

    def _emit(self, start: int, end: int) -> SpeechSegment:
        self._last_end = max(self._last_end, end)
        return SpeechSegment(self.offset + start / SAMPLE_RATE, self.offset + end / SAMPLE_RATE)

    def _close(self, start: int, end: int) -> list[SpeechSegment]:
        """A raw segment ended: pad the previous one against it and hold this one until its padding is known."""
        out: list[SpeechSegment] = []
        if self._pending is None:
            padded_start = max(self._last_end, start - self._pad, 0)
        else:
            p_start, p_end = self._pending
            gap = start - p_end
            if gap < 2 * self._pad:
                p_end_padded, padded_start = p_end + gap // 2, start - gap // 2
            else:
                p_end_padded, padded_start = p_end + self._pad, start - self._pad
            out.append(self._emit(p_start, p_end_padded))
        self._pending = (padded_start, end)
        return out

    def _release_pending(self) -> list[SpeechSegment]:
        """Once twice the padding has passed in silence, the pending segment's end padding is settled."""
        if self._pending is None or self._open is not None:
            return []
        start, end = self._pending
        if self._pos - end < 2 * self._pad + WINDOW:
            return []
        self._pending = None
        return [self._emit(start, end + self._pad)]

    def _step(self, prob: float) -> list[SpeechSegment]:
        cur = self._pos
        self._pos += WINDOW
        out: list[SpeechSegment] = []
        seg = self._open
        if seg is not None and prob >= self.config.threshold and seg.temp_end:
            pause = cur - seg.temp_end
            if pause > self._min_silence_max:
                seg.possible_ends.append((seg.temp_end, pause))
            seg.temp_end = 0
        if prob >= self.config.threshold and seg is None:
            self._open = _Open(start=cur)
            return out
        if seg is not None and cur - seg.start > self._max_speech:
            if seg.possible_ends:
                end, pause = max(seg.possible_ends, key=lambda e: e[1])  # cut at the longest pause
                out.extend(self._close(seg.start, end))
                self._open = _Open(start=end + pause)
            else:
                out.extend(self._close(seg.start, cur))
                self._open = None
            return out
        if seg is not None and prob < self._neg:
            if not seg.temp_end:
                seg.temp_end = cur
            if cur - seg.temp_end >= self._min_silence:
                if seg.temp_end - seg.start > self._min_speech:
                    out.extend(self._close(seg.start, seg.temp_end))
                self._open = None
        out.extend(self._release_pending())
        return out


class SileroVAD:
    """Silero VAD v5/v6 on onnxruntime: 16 kHz mono float32 in, speech segments in seconds out."""

    name = "silero"

    def __init__(
        self,
        model_path: str | Path,
        config: VadConfig | None = None,
        threads: int = 1,
        weight_files: dict[str, str] | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.config = config or VadConfig()
        self.weight_files = weight_files or {}
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def stream(self, offset: float = 0.0, **overrides: float) -> VadStream:
        """A fresh streaming state; ``overrides`` replace fields of ``config`` (e.g. ``max_speech_s=30``)."""
        config = self.config if not overrides else VadConfig(**{**self.config.__dict__, **overrides})
        return VadStream(self, config, offset)

    def score(self, audio: np.ndarray, stream: VadStream) -> np.ndarray:
        """Speech probability of each 512-sample window of ``audio`` (length a multiple of 512), updating
        ``stream``'s recurrent state and context."""
        windows = audio.reshape(-1, WINDOW)
        probs = np.empty(len(windows), np.float32)
        state, context = stream._state, stream._context
        for i, window in enumerate(windows):
            x = np.concatenate([context, window])[None]
            out, state = self.session.run(None, {"input": x, "state": state, "sr": self._sr})
            probs[i] = out[0, 0]
            context = window[-CONTEXT:]
        stream._state, stream._context = state, context
        return probs

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability per 32 ms window of a whole 16 kHz clip (zero-padded to whole windows)."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        padded = np.zeros(-(-len(audio) // WINDOW) * WINDOW, np.float32)
        padded[: len(audio)] = audio
        return self.score(padded, VadStream(self, self.config))

    def __call__(self, audio: np.ndarray) -> list[SpeechSegment]:
        """Speech segments of a whole 16 kHz mono clip, in seconds."""
        stream = self.stream()
        return [*stream.feed(audio), *stream.flush()]


@register("vad", "silero")
def _build_silero(pretrained: bool = True, model_path: str | None = None, **overrides: float) -> SileroVAD:
    """Silero VAD; ``overrides`` are ``VadConfig`` fields. There is no untrained variant: it always loads the ONNX file."""
    found = weights.locate("silero-vad", model_path)
    return SileroVAD(found.path, VadConfig(**overrides), weight_files={found.name: found.sha256})
