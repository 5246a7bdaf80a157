"""Emotional speech: prosody tables, text checks, both engines for real, and failures with fake engine programs."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from affectlens import weights
from affectlens.errors import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS
from generation import speech
from generation.speech import (
    EMOTION_PROSODY,
    MAX_CHARS,
    EspeakEngine,
    PiperEngine,
    Prosody,
    clean_text,
    emotion_prosody,
    synthesize,
)

SENTENCE = "Hello there, how are you?"
LONGER = "I walked down to the river this morning, and the water was higher than I have ever seen it."


def _require_espeak() -> None:
    if speech.find_espeak() is None:
        message = "espeak-ng is not installed (apt install espeak-ng)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _fake_engine(tmp_path: Path, name: str, body: str) -> Path:
    """A Python script standing in for a TTS program: ``body`` runs with ``argv``, ``text`` (stdin) and ``wav``
    (a helper writing 16-bit mono PCM) defined."""
    script = tmp_path / "bin" / name
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, wave, numpy as np\n"
        "argv = sys.argv[1:]\n"
        "text = sys.stdin.read()\n"
        "def wav(samples, rate=16000):\n"
        "    out = argv[argv.index('-w') + 1] if '-w' in argv else argv[argv.index('-f') + 1]\n"
        "    with wave.open(out, 'wb') as w:\n"
        "        w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)\n"
        "        w.writeframes((np.asarray(samples) * 32767).astype('<i2').tobytes())\n" + body
    )
    script.chmod(0o755)
    return script


@pytest.fixture
def clean_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile at an empty folder, to check that synthesis leaves nothing behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def no_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No piper and no espeak anywhere: PATH and the tool-environment root are empty folders."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("AFFECTLENS_VENV_ROOT", str(empty))
    monkeypatch.delenv("AFFECTLENS_PIPER", raising=False)
    return empty


# ---- prosody -----------------------------------------------------------------------------------------------


def test_every_canonical_emotion_has_a_prosody_in_the_documented_direction() -> None:
    assert set(EMOTION_PROSODY) == set(CANONICAL_EMOTIONS)
    table = EMOTION_PROSODY
    assert table["sadness"].rate < 1 and table["sadness"].pitch < 0
    assert table["happiness"].rate > 1 and table["happiness"].pitch > 0
    assert table["surprise"].rate > 1 and table["surprise"].pitch > 0
    assert table["fear"].rate > 1 and table["fear"].pitch > 0
    assert table["anger"].rate > 1 and table["anger"].volume > max(p.volume for k, p in table.items() if k != "anger")
    assert table["disgust"].rate < 1


def test_intensity_scales_from_neutral_and_mixtures_average() -> None:
    assert emotion_prosody("sadness", 0.0) == Prosody()
    assert emotion_prosody("sadness", 1.0) == EMOTION_PROSODY["sadness"]
    half = emotion_prosody("sad", 0.5)  # user names resolve through canonical_emotion
    assert half.rate == pytest.approx((1 + EMOTION_PROSODY["sadness"].rate) / 2)
    mix = emotion_prosody({"happiness": 3, "sadness": 1}, 1.0)
    assert mix.rate == pytest.approx(0.75 * EMOTION_PROSODY["happiness"].rate + 0.25 * EMOTION_PROSODY["sadness"].rate)
    assert mix.pitch == pytest.approx(0.75 * 0.25 + 0.25 * -0.25)
    with pytest.raises(AffectLensError, match="intensity"):
        emotion_prosody("anger", 1.5)
    with pytest.raises(AffectLensError, match="unknown emotion"):
        emotion_prosody("smug")
    with pytest.raises(AffectLensError, match="non-negative"):
        emotion_prosody({"anger": -1})


# ---- text checks -------------------------------------------------------------------------------------------


def test_text_is_cleaned_of_control_characters() -> None:
    assert clean_text("  hi\x00\x07there\n\tfriend\u200b ") == "hi there friend"


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_refused(text: str) -> None:
    with pytest.raises(AffectLensError, match="empty"):
        synthesize(text)


def test_too_long_text_says_how_long_it_is() -> None:
    with pytest.raises(AffectLensError, match=f"has {MAX_CHARS + 1} characters; the limit is {MAX_CHARS}"):
        synthesize("a" * (MAX_CHARS + 1))


@pytest.mark.parametrize("junk", ["?!... ---", "\x00\x01\x02\x1b[0m", "\ufffd\ufffd \u2603"])
def test_text_without_speakable_characters_is_refused(junk: str) -> None:
    with pytest.raises(AffectLensError, match="no speakable characters"):
        synthesize(junk)


# ---- engines found or not ----------------------------------------------------------------------------------


def test_no_engine_names_what_was_looked_for_and_how_to_install(no_engines: Path) -> None:
    assert speech.available_engines() == []
    with pytest.raises(AffectLensError) as info:
        synthesize(SENTENCE)
    message = str(info.value)
    assert "no text-to-speech engine" in message
    assert str(no_engines / "tools" / "piper-tts-1.8.0" / "bin" / "piper") in message
    assert "./run" in message and "apt install espeak-ng" in message
    with pytest.raises(AffectLensError, match="apt install espeak-ng"):
        synthesize(SENTENCE, engine="espeak-ng")


def test_auto_falls_back_to_espeak_and_text_goes_on_stdin(
    tmp_path: Path, no_engines: Path, monkeypatch: pytest.MonkeyPatch, clean_tmp: Path
) -> None:
    record = tmp_path / "record.json"
    fake = _fake_engine(
        tmp_path,
        "espeak-ng",
        f"open({str(record)!r}, 'w').write(__import__('json').dumps({{'argv': argv, 'text': text}}))\n"
        "wav(0.3 * np.sin(np.arange(8000) / 5))\n",
    )
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{no_engines}")
    assert speech.available_engines() == ["espeak-ng"]
    spoken = synthesize("-v --help me", "sadness", 1.0)
    seen = json.loads(record.read_text())
    assert seen["text"].strip() == "-v --help me"
    assert "-v --help me" not in seen["argv"] and "--help" not in seen["argv"]
    assert seen["argv"][seen["argv"].index("-s") + 1] == str(spoken.prosody["speed_wpm"])
    assert spoken.engine == "espeak-ng" and spoken.sample_rate == 16000 and spoken.duration == pytest.approx(0.5)
    assert spoken.samples.dtype == np.float32 and np.abs(spoken.samples).max() <= 1.0
    assert spoken.emotions == {"sadness": 1.0}
    assert os.listdir(clean_tmp) == []


def test_auto_uses_espeak_when_piper_has_no_voice(
    tmp_path: Path, no_engines: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    piper = _fake_engine(tmp_path, "piper", "wav(0.3 * np.ones(2205), 22050)\n")
    espeak = _fake_engine(tmp_path, "espeak-ng", "wav(0.3 * np.ones(1600))\n")
    monkeypatch.setenv("AFFECTLENS_PIPER", str(piper))
    monkeypatch.setenv("PATH", f"{espeak.parent}{os.pathsep}{no_engines}")
    monkeypatch.setenv("AFFECTLENS_CACHE", str(tmp_path / "cache"))  # no fetched voice
    monkeypatch.setattr(weights, "REPO_WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.delenv("AFFECTLENS_WEIGHTS", raising=False)
    speech._verified_voice.cache_clear()
    try:
        assert speech.available_engines() == ["espeak-ng"]
        with caplog.at_level(logging.INFO, logger="generation.speech"):
            spoken = synthesize(SENTENCE)
        with pytest.raises(AffectLensError, match="affectlens weights fetch"):
            synthesize(SENTENCE, engine="piper")
    finally:
        speech._verified_voice.cache_clear()
    assert spoken.engine == "espeak-ng"
    assert "speech engine: espeak-ng (piper unavailable" in caplog.text and "piper-voice-joe" in caplog.text


# ---- engine failures ---------------------------------------------------------------------------------------


def test_a_failing_engine_reports_its_exit_code_and_last_stderr_line(tmp_path: Path, clean_tmp: Path) -> None:
    fake = _fake_engine(
        tmp_path, "espeak-ng", "sys.stderr.write('warming up\\nvoice en-us: not found\\n')\nsys.exit(3)\n"
    )
    with pytest.raises(AffectLensError, match="exit code 3: voice en-us: not found"):
        synthesize(SENTENCE, engine=EspeakEngine(executable=fake))
    assert os.listdir(clean_tmp) == []


def test_silent_output_is_refused(tmp_path: Path, clean_tmp: Path) -> None:
    zeros = _fake_engine(tmp_path, "espeak-ng", "wav(np.zeros(16000))\n")
    with pytest.raises(AffectLensError, match="silence"):
        synthesize(SENTENCE, engine=EspeakEngine(executable=zeros))
    empty = _fake_engine(tmp_path, "espeak-empty", "wav(np.zeros(0))\n")
    with pytest.raises(AffectLensError, match="silence"):
        synthesize(SENTENCE, engine=EspeakEngine(executable=empty))
    nothing = _fake_engine(tmp_path, "espeak-nofile", "pass\n")
    with pytest.raises(AffectLensError, match="no readable WAV"):
        synthesize(SENTENCE, engine=EspeakEngine(executable=nothing))
    assert os.listdir(clean_tmp) == []


def test_a_hanging_engine_times_out(tmp_path: Path, clean_tmp: Path) -> None:
    slow = _fake_engine(tmp_path, "espeak-ng", "import time\ntime.sleep(30)\n")
    with pytest.raises(AffectLensError, match=r"longer than 0\.5 s"):
        synthesize(SENTENCE, engine=EspeakEngine(executable=slow), timeout=0.5)
    assert os.listdir(clean_tmp) == []


def test_piper_gets_its_prosody_on_the_command_line(tmp_path: Path) -> None:
    record = tmp_path / "argv.json"
    fake = _fake_engine(
        tmp_path,
        "piper",
        f"open({str(record)!r}, 'w').write(__import__('json').dumps(argv))\nwav(0.3 * np.ones(2205), 22050)\n",
    )
    model, config = tmp_path / "voice.onnx", tmp_path / "voice.onnx.json"
    engine = PiperEngine(executable=fake, model=model, config=config)

    def flag(argv: list[str], name: str) -> float:
        return float(argv[argv.index(name) + 1])

    synthesize(SENTENCE, "sadness", 1.0, engine=engine)
    sad = json.loads(record.read_text())
    synthesize(SENTENCE, "anger", 1.0, engine=engine)
    angry = json.loads(record.read_text())
    assert sad[sad.index("-m") + 1] == str(model) and sad[sad.index("-c") + 1] == str(config)
    assert flag(sad, "--length-scale") > 1.0 > flag(angry, "--length-scale")
    assert flag(sad, "--volume") < flag(angry, "--volume") <= 1.0
    assert flag(sad, "--noise-w-scale") < flag(angry, "--noise-w-scale")


# ---- real engines ------------------------------------------------------------------------------------------


def test_espeak_speaks_a_sentence(clean_tmp: Path) -> None:
    _require_espeak()
    spoken = synthesize(SENTENCE, engine="espeak-ng")
    assert spoken.engine == "espeak-ng" and spoken.voice == "en-us"
    assert spoken.samples.dtype == np.float32 and spoken.samples.ndim == 1
    assert 0.5 < spoken.duration < 5.0
    assert np.abs(spoken.samples).max() > 0.05
    assert spoken.text == SENTENCE and spoken.seconds > 0
    assert os.listdir(clean_tmp) == []


def test_espeak_sadness_is_slower_than_happiness() -> None:
    _require_espeak()
    sad = synthesize(SENTENCE, "sadness", 0.8, engine="espeak-ng")
    happy = synthesize(SENTENCE, "happiness", 0.8, engine="espeak-ng")
    assert sad.duration > 1.15 * happy.duration
    assert sad.prosody["pitch"] < happy.prosody["pitch"]


def test_piper_speaks_with_the_joe_voice_and_sadness_is_slower() -> None:
    if speech.find_piper() is None:
        pytest.skip(f"piper's tool environment is missing (looked in {speech.piper_candidates()}); ./run builds it")
    sad = synthesize(LONGER, "sadness", 1.0, engine="piper")
    happy = synthesize(LONGER, "happiness", 1.0, engine="piper")
    assert sad.engine == "piper" and sad.voice == "en_US-joe-medium" and sad.sample_rate == 22050
    assert 2.0 < happy.duration < 12.0 and np.abs(happy.samples).max() > 0.1
    # piper samples its phoneme durations (happiness with more variation): one pair's ratio ranged 1.08-1.22 over
    # runs, so the mean of three each is compared (length scales 1.28 against 0.89)
    sad_mean = np.mean([sad.duration, *(synthesize(LONGER, "sadness", 1.0, engine="piper").duration for _ in range(2))])
    happy_mean = np.mean(
        [happy.duration, *(synthesize(LONGER, "happiness", 1.0, engine="piper").duration for _ in range(2))]
    )
    assert sad_mean > 1.1 * happy_mean
