"""Speech recognition and the speech encoder: OpenAI Whisper run with CTranslate2.

``whisper-tiny.en`` (the default) is English-only: it transcribes English and, on other languages, yields
an English guess or a translation, never the source-language text. ``whisper-hub`` loads any local
CTranslate2 / faster-whisper model folder (``model_path=...``; multilingual models detect the language or
take ``language=``). Nothing is downloaded. The 80-bin (or 128-bin) Whisper log-mel front end is computed
here in numpy, equal to OpenAI's ``log_mel_spectrogram``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from affectlens import weights
from affectlens.errors import WeightsError
from affectlens.registry import register
from perception.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

N_FFT = 400  # 25 ms window at 16 kHz
HOP = 160  # 10 ms hop: 100 mel frames per second
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE  # Whisper always encodes 30 s windows (3000 mel frames)
MEL_FRAMES = WINDOW_SAMPLES // HOP
#: Encoder output frames per second (the encoder halves the 100 Hz mel rate): one per 20 ms.
ENCODER_FPS = 50
SAMPLES_PER_ENCODER_FRAME = SAMPLE_RATE // ENCODER_FPS


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa with ``htk=False``."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    freq = np.asarray(freq, np.float64)
    mel = freq / f_sp
    log_part = freq >= min_log_hz
    mel[log_part] = min_log_mel + np.log(freq[log_part] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    mel = np.asarray(mel, np.float64)
    freq = mel * f_sp
    log_part = mel >= min_log_mel
    freq[log_part] = min_log_hz * np.exp(logstep * (mel[log_part] - min_log_mel))
    return freq


def mel_filters(n_mels: int = 80, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-normalised triangular mel filters, ``(n_mels, n_fft // 2 + 1)``, as ``librosa.filters.mel``."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sample_rate / 2]))[0], n_mels + 2)
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(lower, upper))
    filters *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return filters.astype(np.float32)


def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80, filters: np.ndarray | None = None) -> np.ndarray:
    """Whisper's log-mel features of one 30 s window: ``(n_mels, 3000)`` float32.

    ``audio`` is 16 kHz mono float32, at most 30 s; it is zero-padded to 30 s as Whisper expects. Periodic
    Hann window of 400 samples, hop 160 (10 ms), centred frames with reflect padding, power spectrum, mel
    filters, log10 floored at 8 below the maximum, scaled as ``(log + 4) / 4``.
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    if len(audio) > WINDOW_SAMPLES:
        raise ValueError(f"at most {WINDOW_SAMPLES} samples (30 s) per window, got {len(audio)}")
    padded = np.zeros(WINDOW_SAMPLES, np.float32)
    padded[: len(audio)] = audio
    padded = np.pad(padded, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:MEL_FRAMES]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    mel = (filters if filters is not None else mel_filters(n_mels)) @ power.T.astype(np.float32)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def encoder_frames(num_samples: int) -> int:
    """Encoder frames (20 ms each) that cover ``num_samples`` of real audio in one window: 1..1500."""
    return int(min(max(1, math.ceil(num_samples / SAMPLES_PER_ENCODER_FRAME)), WINDOW_SECONDS * ENCODER_FPS))


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding settings (greedy by default: beam 5 gave the same RAVDESS transcripts at the same cost).

    A window whose no-speech probability exceeds ``no_speech_threshold`` while its mean token
    log-probability is under ``logprob_threshold`` gives empty text (Whisper's silence rule); so does one
    whose no-speech probability exceeds ``no_speech_alone`` (tiny.en says "you" to digital silence with a
    no-speech probability of 0.95 and a confident log-probability).
    """

    beam_size: int = 1
    max_length: int = 224
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    no_speech_alone: float = 0.9
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0


class WhisperASR:
    """Whisper on CTranslate2: ``transcribe`` (text) and ``encode`` (encoder frames) of 16 kHz mono audio.

    Audio longer than 30 s is cut into consecutive 30 s windows (texts joined by spaces, frames
    concatenated). ``encoder_id`` names the encoder (two components share encoder output only when it
    matches).
    """

    def __init__(
        self,
        model_dir: str | Path,
        name: str = "whisper-tiny.en",
        compute_type: str = "int8",
        threads: int = 1,
        language: str | None = None,
        options: DecodeOptions | None = None,
        weight_files: dict[str, str] | None = None,
    ) -> None:
        import ctranslate2
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        tokenizer_file = model_dir / "tokenizer.json"
        if not (model_dir / "model.bin").is_file() or not tokenizer_file.is_file():
            raise WeightsError(f"{model_dir}: not a CTranslate2 Whisper folder (needs model.bin and tokenizer.json)")
        self.name = name
        self.encoder_id = name
        self.model_dir = model_dir
        self.weight_files = weight_files or {}
        self.options = options or DecodeOptions()
        import torch

        # CTranslate2 sets the process-wide OpenMP thread count to its own ``intra_threads``, which PyTorch
        # shares: without restoring it, every torch model (the face stages) would drop to one thread.
        torch_threads = torch.get_num_threads()
        self.model = ctranslate2.models.Whisper(
            str(model_dir), device="cpu", compute_type=compute_type, intra_threads=threads, inter_threads=1
        )
        torch.set_num_threads(torch_threads)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.multilingual = bool(self.model.is_multilingual)
        self.language = language
        self.n_mels = int(self.model.n_mels)
        self._filters = mel_filters(self.n_mels)
        self._eot = self._token("<|endoftext|>")
        self._d_model: int | None = None

    def _token(self, text: str) -> int:
        token = self.tokenizer.token_to_id(text)
        if token is None:
            raise WeightsError(f"{self.model_dir}: the tokenizer has no {text} token")
        return int(token)

    def _windows(self, audio: np.ndarray) -> list[np.ndarray]:
        audio = np.asarray(audio, np.float32).reshape(-1)
        if len(audio) == 0:
            return []
        return [audio[i : i + WINDOW_SAMPLES] for i in range(0, len(audio), WINDOW_SAMPLES)]

    def _encode_window(self, window: np.ndarray) -> Any:
        import ctranslate2

        features = log_mel_spectrogram(window, self.n_mels, self._filters)[None]
        return self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=True)

    def _prompt(self, encoded: Any) -> list[int]:
        prompt = [self._token("<|startoftranscript|>")]
        if self.multilingual:
            language = self.language
            if language is None:
                language = self.model.detect_language(encoded)[0][0][0].strip("<|>")
            prompt += [self._token(f"<|{language}|>"), self._token("<|transcribe|>")]
        return [*prompt, self._token("<|notimestamps|>")]

    def _decode(self, encoded: Any) -> str:
        o = self.options
        result = self.model.generate(
            encoded,
            [self._prompt(encoded)],
            beam_size=o.beam_size,
            max_length=o.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            repetition_penalty=o.repetition_penalty,
            no_repeat_ngram_size=o.no_repeat_ngram_size,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._eot]
        # CTranslate2's score is the cumulative log-probability divided by the length (length_penalty=1);
        # Whisper's rule averages over the tokens plus the end token.
        n = len(result.sequences_ids[0])
        avg_logprob = result.scores[0] * n / (n + 1) if result.scores else 0.0
        silent = result.no_speech_prob > o.no_speech_threshold and avg_logprob < o.logprob_threshold
        if silent or result.no_speech_prob > o.no_speech_alone:
            logger.debug("window judged silent (no-speech %.2f, log-prob %.2f)", result.no_speech_prob, avg_logprob)
            return ""
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True)).strip()

    def transcribe_and_encode(self, audio: np.ndarray) -> tuple[str, np.ndarray]:
        """Text and encoder frames of 16 kHz mono float32 audio, running the encoder once.

        Frames are ``(T, d_model)`` float32 (``d_model`` = 384 for tiny), one per 20 ms of real audio:
        ``T = ceil(len(audio) / 320)`` per window, the padding up to 30 s left out.
        """
        texts, frames = [], []
        for window in self._windows(audio):
            encoded = self._encode_window(window)
            frames.append(np.asarray(encoded)[0, : encoder_frames(len(window))])
            texts.append(self._decode(encoded))
        if not frames:
            return "", np.zeros((0, self.d_model), np.float32)
        return " ".join(t for t in texts if t), np.concatenate(frames).astype(np.float32, copy=False)

    def transcribe(self, audio: np.ndarray) -> str:
        """The transcript of 16 kHz mono float32 audio (empty for silence)."""
        return self.transcribe_and_encode(audio)[0]

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Encoder output frames for the real span of 16 kHz mono audio: ``(ceil(n / 320), d_model)`` float32,
        one frame per 20 ms; each 30 s window is encoded zero-padded, as Whisper was trained."""
        frames = [np.asarray(self._encode_window(w))[0, : encoder_frames(len(w))] for w in self._windows(audio)]
        if not frames:
            return np.zeros((0, self.d_model), np.float32)
        return np.concatenate(frames).astype(np.float32, copy=False)

    @property
    def d_model(self) -> int:
        """Width of the encoder output (384 for tiny)."""
        if self._d_model is None:
            probe = self._encode_window(np.zeros(SAMPLES_PER_ENCODER_FRAME, np.float32))
            self._d_model = int(np.asarray(probe).shape[-1])
        return self._d_model


@register("asr", "whisper-tiny.en")
def _build_tiny_en(pretrained: bool = True, model_path: str | None = None, **overrides: Any) -> WhisperASR:
    """Whisper tiny.en (English only) from the ``whisper-tiny.en`` weight group; no untrained variant."""
    found = weights.locate_group("whisper-tiny.en", model_path)
    return WhisperASR(found.path, name="whisper-tiny.en", weight_files=found.files, **overrides)


@register("asr", "whisper-hub")
def _build_hub(pretrained: bool = True, model_path: str | None = None, **overrides: Any) -> WhisperASR:
    """Any Whisper model the user has as a local CTranslate2 / faster-whisper folder (``model_path``)."""
    if model_path is None:
        raise WeightsError(
            "asr 'whisper-hub' needs model_path=<a local CTranslate2 Whisper folder> "
            "(e.g. a faster-whisper snapshot); nothing is downloaded"
        )
    folder = Path(model_path)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: Whisper model folder does not exist")
    name = overrides.pop("name", "whisper-hub")
    return WhisperASR(folder, name=name, **overrides)
