"""Voice perception: VAD, Whisper ASR and encoder, prosody, the speech-emotion head and the streaming pipeline.

Speech-like audio is synthesised here: vowels made of harmonics under formant peaks, with a pitch contour
and a syllable-rate amplitude envelope (Silero takes them for speech; it ignores pure tones and noise).
Tests on real speech read RAVDESS clips through ``require_shared``.
"""

from __future__ import annotations

import itertools
import math
import tracemalloc
import wave
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from affectlens.errors import MediaError, WeightsError
from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.registry import create, list_models
from affectlens.types import EmotionPrediction, TextEmotion
from perception.audio import SAMPLE_RATE, load_audio
from perception.voice.asr import encoder_frames, log_mel_spectrogram, mel_filters
from perception.voice.emotion import (
    ACOUSTIC_DIM,
    PROSODY_DIM,
    RAVDESS_LABELS,
    ProbeConfig,
    SpeechEmotionHead,
    WhisperProbe,
    acoustic_vector,
    pool_frames,
    prosody_vector,
)
from perception.voice.pipeline import VoicePipeline
from perception.voice.prosody import ProsodyAnalyzer, track_pitch
from perception.voice.vad import WINDOW, VadConfig, VadStream
from tests.conftest import require_shared

SR = SAMPLE_RATE
#: (F1, F2, F3) in Hz of a few English vowels.
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [660, 1720, 2410]])


def vowels(seconds: float, f0: float = 150.0, rate: float = 4.0, seed: int = 0) -> np.ndarray:
    """Speech-like float32 audio: a new vowel every syllable (``rate`` per second), pitch gliding +-12%."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    f = f0 * (1 + 0.12 * np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f) / SR
    syllable = (t * rate).astype(int)
    formants = VOWELS[rng.integers(0, len(VOWELS), syllable.max() + 1)[syllable]].astype(float)
    x = np.zeros_like(t)
    for k in range(1, int(4000 / f0) + 1):
        amp = sum(0.5**j / (1 + ((k * f - formants[:, j]) / (60 + 40 * j)) ** 2) for j in range(3)) / math.sqrt(k)
        x += amp * np.sin(k * phase)
    x *= (0.35 + 0.65 * np.sin(np.pi * rate * t) ** 2) * np.minimum(1, np.minimum(t, seconds - t) / 0.05)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def harmonic(seconds: float, f0: float, rate: float = 4.0, contour: float = 0.1, jitter: float = 0.0) -> np.ndarray:
    """Harmonic tone at ``f0`` with a +-``contour`` pitch glide over whole cycles and ``rate`` Hz syllables."""
    rng = np.random.default_rng(1)
    t = np.arange(round(seconds * SR)) / SR
    f = f0 * (1 + contour * np.sin(2 * np.pi * t / seconds))
    if jitter:
        f = f * (1 + jitter * np.repeat(rng.standard_normal(len(t) // 80 + 1), 80)[: len(t)])
    phase = 2 * np.pi * np.cumsum(f) / SR
    x = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 8))
    return (0.3 * x * np.sin(np.pi * rate * t) ** 2).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), np.float32)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def ravdess(actor: int, emotion: int = 1, statement: int = 1, repetition: int = 1) -> np.ndarray:
    root = require_shared("ravdess_speech")
    name = f"Actor_{actor:02d}/03-01-{emotion:02d}-01-{statement:02d}-{repetition:02d}-{actor:02d}.flac"
    return load_audio(root / name)


# ---- fakes for the pipeline tests --------------------------------------------------------------------


class CountingASR:
    """Stands in for ``WhisperASR``: fixed text, encoder frames from the audio's length, counts calls."""

    name = "fake-asr"
    encoder_id = "whisper-tiny.en"
    weight_files: ClassVar[dict[str, str]] = {"fake-asr": "0" * 64}

    def __init__(self) -> None:
        self.encoded = 0
        self.transcribed = 0

    def encode(self, audio: np.ndarray) -> np.ndarray:
        self.encoded += 1
        return np.random.default_rng(len(audio)).standard_normal((encoder_frames(len(audio)), 384)).astype(np.float32)

    def transcribe(self, audio: np.ndarray) -> str:
        self.transcribed += 1
        return f"{len(audio) / SR:.1f} seconds"

    def transcribe_and_encode(self, audio: np.ndarray) -> tuple[str, np.ndarray]:
        self.transcribed += 1
        return f"{len(audio) / SR:.1f} seconds", self.encode(audio)


class FakeTextEmotion:
    name = "fake-text"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict(self, texts: list[str]) -> list[TextEmotion]:
        self.seen.extend(texts)
        sad = EmotionPrediction.from_vector(np.eye(len(CANONICAL_EMOTIONS))[2], self.name)
        return [TextEmotion(sad, {"sadness": 1.0}) for _ in texts]


class OneLongSegmentVAD:
    """A VAD that calls the whole input one segment, to test the pipeline's own length cap."""

    name = "one-segment"

    def stream(self, offset: float = 0.0, **_: float) -> _OneLongStream:
        return _OneLongStream(offset)


class _OneLongStream:
    def __init__(self, offset: float) -> None:
        self.offset, self.fed, self.keep_from = offset, 0, offset

    def feed(self, samples: np.ndarray) -> list:
        self.fed += len(samples)
        return []

    def flush(self) -> list:
        from perception.voice.vad import SpeechSegment

        return [SpeechSegment(self.offset, self.offset + self.fed / SR)]


@pytest.fixture(scope="module")
def vad():
    return create("vad")


@pytest.fixture(scope="module")
def asr():
    return create("asr")


# ---- VAD ---------------------------------------------------------------------------------------------


@pytest.mark.weights
def test_vad_finds_the_voiced_spans(vad) -> None:
    audio = np.concatenate([silence(1), vowels(2.0), silence(2), vowels(1.5, f0=210, seed=3), silence(1)])
    segments = vad(audio)
    assert len(segments) == 2
    for seg, (start, end) in zip(segments, [(1.0, 3.0), (5.0, 6.5)], strict=True):
        assert seg.start == pytest.approx(start, abs=0.15) and seg.end == pytest.approx(end, abs=0.15)


@pytest.mark.weights
def test_vad_ignores_silence_tones_and_noise(vad) -> None:
    t = np.arange(5 * SR) / SR
    assert vad(silence(5)) == []
    assert vad((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)) == []
    assert vad(np.random.default_rng(0).normal(0, 0.1, 5 * SR).astype(np.float32)) == []


@pytest.mark.weights
def test_vad_streaming_matches_whole_clip_for_any_chunking(vad) -> None:
    rng = np.random.default_rng(5)
    parts = []
    for i in range(8):
        parts += [silence(rng.uniform(0.2, 1.2)), vowels(rng.uniform(0.5, 2.5), f0=rng.uniform(100, 250), seed=i)]
    audio = np.concatenate(parts)
    whole = vad(audio)
    assert len(whole) >= 6
    for chunk in (WINDOW * 3 + 17, SR, 7 * SR):
        stream = vad.stream(offset=10.0)
        found = []
        for i in range(0, len(audio), chunk):
            found += stream.feed(audio[i : i + chunk])
        found += stream.flush()
        assert [(round(s.start - 10.0, 4), round(s.end - 10.0, 4)) for s in found] == [
            (round(s.start, 4), round(s.end, 4)) for s in whole
        ]


class _Constant:
    """Feeds a ``VadStream`` fixed probabilities instead of running the model."""

    def __init__(self, prob: float) -> None:
        self.prob = prob

    def score(self, audio: np.ndarray, stream: VadStream) -> np.ndarray:
        return np.full(len(audio) // WINDOW, self.prob, np.float32)


def test_vad_caps_segment_length_and_keeps_bounded_history() -> None:
    stream = VadStream(_Constant(0.9), VadConfig(max_speech_s=5.0))  # type: ignore[arg-type]
    segments = []
    for _ in range(23):
        segments += stream.feed(np.zeros(SR, np.float32))
        assert stream.keep_from >= segments[-1].end - 0.1 if segments else stream.keep_from == 0.0
    segments += stream.flush()
    assert all(s.duration <= 5.0 for s in segments) and len(segments) >= 4
    assert segments[-1].end == pytest.approx(23.0)
    assert all(a.end <= b.start for a, b in itertools.pairwise(segments))


def test_vad_config_is_checked() -> None:
    with pytest.raises(ValueError, match="threshold"):
        VadConfig(threshold=1.5)
    with pytest.raises(ValueError, match="max_speech_s"):
        VadConfig(max_speech_s=0)


# ---- Whisper -----------------------------------------------------------------------------------------


def test_log_mel_matches_transformers_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor()  # defaults: 80 mels, 16 kHz, 30 s; no download
    audio = vowels(2.3, seed=2)
    expected = extractor(audio, sampling_rate=SR, return_tensors="np").input_features[0]
    np.testing.assert_allclose(log_mel_spectrogram(audio), expected, atol=1e-4)
    np.testing.assert_allclose(mel_filters(80), extractor.mel_filters.T, atol=1e-6)
    assert encoder_frames(SR) == 50 and encoder_frames(1) == 1 and encoder_frames(10**9) == 1500


@pytest.mark.weights
@pytest.mark.data
def test_whisper_transcribes_a_ravdess_statement(asr) -> None:
    text = asr.transcribe(ravdess(actor=1, statement=1))
    assert "door" in text.lower()
    assert "kids" in text.lower()


@pytest.mark.weights
def test_whisper_encoder_frames_cover_the_real_span(asr) -> None:
    frames = asr.encode(vowels(2.0))
    assert frames.shape == (100, 384) and frames.dtype == np.float32 and np.isfinite(frames).all()
    long = asr.encode(np.concatenate([silence(29.0), vowels(2.0)]))  # two 30 s windows
    assert long.shape == (1550, 384)
    assert asr.transcribe(silence(3)) == ""


@pytest.mark.weights
@pytest.mark.data
def test_whisper_hub_loads_a_local_folder(asr) -> None:
    from affectlens import weights

    folder = weights.locate_group("whisper-tiny.en").path
    hub = create("asr", "whisper-hub", model_path=str(folder))
    assert hub.name == "whisper-hub" and "whisper-hub" in list_models("asr")
    clip = ravdess(actor=2, statement=2)
    assert hub.transcribe(clip) == asr.transcribe(clip)
    with pytest.raises(WeightsError, match="model_path"):
        create("asr", "whisper-hub")


# ---- prosody -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("f0", [100.0, 180.0, 260.0])
def test_prosody_recovers_a_known_pitch(f0: float) -> None:
    prosody = ProsodyAnalyzer()(harmonic(3.0, f0))
    assert prosody.pitch_mean == pytest.approx(f0, rel=0.03)
    # +-10% glide: the 10th-90th percentile span is about 12 * log2(1.095 / 0.905) = 3.3 semitones
    assert prosody.pitch_range == pytest.approx(3.3, abs=0.5)
    assert prosody.hnr is not None and prosody.hnr > 15


def test_prosody_counts_syllables() -> None:
    analyzer = ProsodyAnalyzer()
    rates = {rate: analyzer(harmonic(4.0, 160.0, rate=rate)).speaking_rate for rate in (2.0, 4.0, 6.0)}
    for rate, measured in rates.items():
        assert measured == pytest.approx(rate, rel=0.25)
    assert rates[2.0] < rates[4.0] < rates[6.0]


def test_prosody_energy_pauses_and_voice_quality() -> None:
    analyzer = ProsodyAnalyzer()
    t = np.arange(2 * SR) / SR
    full_scale = analyzer(np.sin(2 * np.pi * 200 * t).astype(np.float32))
    assert full_scale.energy == pytest.approx(-3.01, abs=0.05)  # RMS of a full-scale sine
    quiet = analyzer(silence(2.0))
    assert quiet.pitch_mean is None and quiet.pause_ratio == 1.0 and quiet.speaking_rate == 0.0
    noise = analyzer(np.random.default_rng(0).normal(0, 0.1, 2 * SR).astype(np.float32))
    assert noise.pitch_mean is None and noise.jitter is None
    half = analyzer(np.concatenate([harmonic(1.0, 150.0, rate=1.0, contour=0.0), silence(1.0)]))
    assert 0.5 <= half.pause_ratio < 0.8
    steady = analyzer(harmonic(2.0, 150.0, contour=0.0))
    shaky = analyzer(harmonic(2.0, 150.0, contour=0.0, jitter=0.03))
    assert steady.jitter is not None and shaky.jitter is not None and shaky.jitter > 3 * steady.jitter
    hiss = np.random.default_rng(1).normal(0, 0.03, 2 * SR).astype(np.float32)
    noisy = analyzer(harmonic(2.0, 150.0, contour=0.0) + hiss)
    assert steady.hnr is not None and noisy.hnr is not None and steady.hnr > noisy.hnr + 5


def test_pitch_track_frames_and_octave() -> None:
    track = track_pitch(harmonic(1.0, 220.0, contour=0.0, rate=0.5))
    assert len(track.f0) == 100
    voiced = track.f0[track.voiced]
    assert len(voiced) > 50 and np.median(voiced) == pytest.approx(220.0, rel=0.01)


# ---- speech emotion head -----------------------------------------------------------------------------


def test_untrained_head_round_trips(tmp_path: Path) -> None:
    config = ProbeConfig(use_acoustic=True, hidden_dim=16, dropout=0.1)
    head = SpeechEmotionHead(config)
    head.set_standardisation(np.random.default_rng(0).normal(3, 2, (50, config.feature_dim)))
    head.save_pretrained(tmp_path / "probe")
    assert sorted(p.name for p in (tmp_path / "probe").iterdir()) == ["config.json", "model.safetensors"]
    loaded = SpeechEmotionHead.from_pretrained(tmp_path / "probe")
    assert loaded.config == config
    probe_a, probe_b = WhisperProbe(head), WhisperProbe(loaded)
    frames = np.random.default_rng(1).standard_normal((80, 384)).astype(np.float32)
    audio = harmonic(1.6, 150.0)
    a = probe_a.predict_encoded([frames], [audio])[0]
    b = probe_b.predict_encoded([frames], [audio])[0]
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    assert set(a.probabilities) == set(CANONICAL_EMOTIONS) and sum(a.probabilities.values()) == pytest.approx(1.0)
    assert a.valence is not None and -1 <= a.valence <= 1 and a.arousal is not None and -1 <= a.arousal <= 1


def test_calm_is_merged_into_neutral_and_va_follows_the_circumplex() -> None:
    probe = create("speech_emotion", pretrained=False)
    calm, angry = RAVDESS_LABELS.index("calm"), RAVDESS_LABELS.index("angry")
    probs = np.zeros((2, len(RAVDESS_LABELS)), np.float32)
    probs[0, calm], probs[1, angry] = 1.0, 1.0
    calm_pred, angry_pred = probe.to_predictions(probs)
    assert calm_pred.label == "neutral" and calm_pred.confidence == pytest.approx(1.0)
    assert angry_pred.label == "anger"
    assert (
        calm_pred.arousal is not None and angry_pred.arousal is not None and calm_pred.arousal < 0 < angry_pred.arousal
    )
    assert angry_pred.valence is not None and angry_pred.valence < 0


def test_probe_refuses_what_it_cannot_use() -> None:
    probe = create("speech_emotion", pretrained=False)
    with pytest.raises(RuntimeError, match="no encoder"):
        probe.predict(harmonic(1.0, 150.0))
    with pytest.raises(ValueError, match="encoder frames"):
        probe.predict_encoded([np.zeros((10, 512), np.float32)])
    other = CountingASR()
    other.encoder_id = "whisper-small"
    with pytest.raises(ValueError, match="trained on"):
        create("speech_emotion", pretrained=False, encoder=other)
    with pytest.raises(ValueError, match="unknown ProbeConfig"):
        ProbeConfig.from_dict({"input_dim": 384, "layers": 3})
    pooled = pool_frames(np.ones((5, 384), np.float32))
    assert pooled.shape == (768,) and pooled[:384].min() == 1.0 and pooled[384:].max() == 0.0
    assert prosody_vector(ProsodyAnalyzer()(silence(1.0))).shape == (PROSODY_DIM,)
    assert acoustic_vector(harmonic(1.0, 150.0)).shape == (ACOUSTIC_DIM,)
    with pytest.raises(ValueError, match="audio"):
        WhisperProbe(SpeechEmotionHead(ProbeConfig(use_acoustic=True))).features(np.zeros((4, 384), np.float32))


@pytest.mark.weights
@pytest.mark.data
def test_trained_head_beats_chance_on_held_out_actors() -> None:
    """The shipped head never saw actors 23 and 24 (see scripts/train_speech_emotion.py)."""
    root = require_shared("ravdess_speech")
    probe = create("speech_emotion")
    labels = pd.read_csv(root / "labels.csv")
    held = labels[labels.actor.isin([23, 24])].iloc[::4]  # 30 clips: every emotion of both actors
    audios = [load_audio(root / p) for p in held.path]
    probs = probe.predict_features(
        np.stack([probe.features(probe.encoder.encode(a), a) for a in audios])
    )  # head order: the 8 RAVDESS classes
    accuracy = float(np.mean(np.array(RAVDESS_LABELS)[probs.argmax(1)] == held.label.to_numpy()))
    assert accuracy > 0.4, f"8-class accuracy {accuracy:.2f} (chance 0.125)"


# ---- pipeline ----------------------------------------------------------------------------------------


def _burst_file(path: Path, minutes: float, seed: int = 0) -> tuple[Path, list[tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    parts, spans, t = [], [], 0.0
    while t < minutes * 60 - 5:
        pause, burst = rng.uniform(0.6, 2.0), rng.uniform(0.8, 3.5)
        parts += [silence(pause), vowels(burst, f0=rng.uniform(100, 240), seed=len(spans))]
        spans.append((t + pause, t + pause + burst))
        t += pause + burst
    parts.append(silence(minutes * 60 - t))
    return write_wav(path, np.concatenate(parts)), spans


def _peak_memory(pipeline: VoicePipeline, path: Path) -> tuple[tuple, float]:
    tracemalloc.start()
    try:
        utterances = pipeline(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return utterances, peak


@pytest.mark.weights
@pytest.mark.slow
def test_pipeline_streams_three_minutes_in_bounded_memory(vad, tmp_path: Path) -> None:
    path, spans = _burst_file(tmp_path / "three_minutes.wav", 3.0)
    asr = CountingASR()
    pipeline = VoicePipeline(vad, asr, create("speech_emotion", pretrained=False, encoder=asr), chunk_seconds=20.0)
    utterances, peak = _peak_memory(pipeline, path)
    encoder_passes = asr.encoded
    _, peak_one_minute = _peak_memory(pipeline, _burst_file(tmp_path / "one_minute.wav", 1.0)[0])
    assert peak < 100e6, f"peak {peak / 1e6:.0f} MB"
    assert peak < 1.5 * peak_one_minute, f"peak grows with length: {peak_one_minute / 1e6:.0f} -> {peak / 1e6:.0f} MB"
    assert len(utterances) >= 0.8 * len(spans)
    starts = [u.start for u in utterances]
    assert starts == sorted(starts) and all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(utterances))
    assert [u.index for u in utterances] == list(range(len(utterances)))
    assert encoder_passes == len(utterances)  # one encoder pass per segment, shared by ASR and emotion
    found = sum(any(abs(u.start - s) < 0.3 for u in utterances) for s, _ in spans)
    assert found >= 0.8 * len(spans)
    assert all(u.prosody is not None and u.speech_emotion is not None for u in utterances)
    # Segments that cross a chunk boundary come out whole: small chunks give the same utterances.
    small = VoicePipeline(vad, CountingASR(), None, prosody=False, chunk_seconds=1.3)(path)
    assert [(round(u.start, 3), round(u.end, 3)) for u in small] == [
        (round(u.start, 3), round(u.end, 3)) for u in utterances
    ]


def test_pipeline_caps_segments_at_30_seconds(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "long.wav", harmonic(71.0, 140.0))
    utterances = VoicePipeline(OneLongSegmentVAD(), CountingASR(), None, prosody=False, chunk_seconds=10.0)(path)
    assert len(utterances) == 3
    assert all(u.end - u.start <= 30.0 + 1e-6 for u in utterances)
    assert utterances[0].start == 0.0 and utterances[-1].end == pytest.approx(71.0, abs=1e-3)
    assert utterances[0].text == "23.7 seconds"


@pytest.mark.weights
def test_pipeline_on_silence_noise_and_bad_input(vad, tmp_path: Path) -> None:
    from tests.test_audio import write_video

    pipeline = VoicePipeline(vad, CountingASR(), None)
    assert pipeline(write_wav(tmp_path / "silence.wav", silence(4.0))) == ()
    noise = np.random.default_rng(0).normal(0, 0.05, 4 * SR).astype(np.float32)
    assert pipeline(write_wav(tmp_path / "noise.wav", noise)) == ()
    with pytest.raises(MediaError, match="no audio stream"):
        pipeline(write_video(tmp_path / "mute.mp4", None))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        pipeline(empty)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(200)))
    with pytest.raises(MediaError):
        pipeline(corrupt)
    with pytest.raises(MediaError, match="zero-length"):
        pipeline(write_wav(tmp_path / "zero.wav", silence(0)))


@pytest.mark.weights
def test_pipeline_scores_transcripts_with_an_injected_text_model(vad, tmp_path: Path) -> None:
    path = write_wav(
        tmp_path / "two.wav", np.concatenate([silence(0.5), vowels(1.5), silence(1.5), vowels(2.0, seed=4)])
    )
    text_model, asr = FakeTextEmotion(), CountingASR()
    pipeline = VoicePipeline(vad, asr, None, prosody=False, text_emotion=text_model)
    utterances = pipeline(path)
    assert len(utterances) == 2
    assert text_model.seen == [u.text for u in utterances]
    assert all(u.text_emotion is not None and u.text_emotion.emotion.label == "sadness" for u in utterances)
    assert all(u.prosody is None and u.speech_emotion is None for u in utterances)
    assert pipeline.describe() == {
        "vad": "silero", "asr": "fake-asr", "speech_emotion": None, "prosody": None, "text_emotion": "fake-text",
    }  # fmt: skip
    assert set(pipeline.weight_files()) == {"silero-vad", "fake-asr"}
    again = pipeline.analyze_audio(load_audio(path), start=100.0)
    assert [round(u.start - 100.0, 3) for u in again] == [round(u.start, 3) for u in utterances]


@pytest.mark.weights
@pytest.mark.data
def test_default_pipeline_on_real_speech(tmp_path: Path) -> None:
    from perception.voice.pipeline import build_voice_pipeline

    clips = [ravdess(actor=1, statement=1), ravdess(actor=2, emotion=5, statement=2)]
    path = write_wav(tmp_path / "talk.wav", np.concatenate([silence(0.5), clips[0], silence(1.0), clips[1]]))
    pipeline = build_voice_pipeline()
    assert pipeline.speech_emotion.encoder is pipeline.asr  # one Whisper, one encoder pass per segment
    utterances = pipeline(path)
    assert len(utterances) >= 2
    text = " ".join(u.text or "" for u in utterances).lower()
    assert "door" in text
    for u in utterances:
        assert u.speech_emotion is not None and sum(u.speech_emotion.probabilities.values()) == pytest.approx(1.0)
        assert u.prosody is not None and u.prosody.pitch_mean is not None
    assert set(pipeline.describe().values()) >= {"silero", "whisper-tiny.en", "whisper-probe", "yin-prosody"}
    assert {"silero-vad", "whisper-tiny.en-model", "speech-emotion-whisper-probe-model"} <= set(pipeline.weight_files())


@pytest.mark.weights
def test_loading_and_running_whisper_leaves_torch_threads_alone() -> None:
    """CTranslate2 sets the shared OpenMP thread count; the face models must keep all their threads."""
    import torch

    from affectlens.registry import create_asr

    before = torch.get_num_threads()
    model = create_asr(threads=1)
    model.transcribe(vowels(2.0))
    assert torch.get_num_threads() == before
