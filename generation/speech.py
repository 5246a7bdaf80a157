"""Emotional speech: text -> float32 mono samples, with prosody chosen by an emotion (or a mixture of emotions).

Two engines, both run as separate processes and never imported:

- ``PiperEngine``: piper (GPL-3.0) with the Piper voice ``en_US-joe-medium`` (manifest weights ``piper-voice-joe``
  and ``piper-voice-joe-config``). Piper lives in its own tool environment that ``./run`` builds
  (``$AFFECTLENS_VENV_ROOT/tools/piper-tts-1.8.0``); running it as a program keeps its licence out of ours.
- ``EspeakEngine``: eSpeak NG (formant synthesis, robotic but everywhere: ``apt install espeak-ng``).

Prosody per emotion (``EMOTION_PROSODY``) follows the classic findings on vocal affect (Scherer 2003; Juslin &
Laukka 2003): sadness slow, low, quiet and flat; happiness and surprise faster and higher; fear fast and high;
anger faster and louder; disgust slow. The table holds the settings at full intensity; ``intensity`` moves
linearly from neutral towards them, and a mixture averages the scaled settings by weight.

What each engine can change:

- eSpeak NG: speaking rate (``-s`` words per minute), base pitch (``-p`` 0-99) and amplitude (``-a`` 0-200).
- piper: only the speaking rate (``--length-scale``), the volume (``--volume``, after piper's own peak
  normalisation) and the VITS noise scales (``--noise-scale``, ``--noise-w-scale``: how varied the voice and the
  phoneme durations are, used here as a rough stand-in for pitch range). Piper has no pitch control, so the
  table's ``pitch`` is ignored by it.

Text goes to the engine on stdin, never on the command line (it may start with "-"); each run happens in a
temporary directory that is always removed, under a timeout.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import unicodedata
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final, Literal, Protocol

import numpy as np

from affectlens import weights
from affectlens.errors import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS, canonical_mixture

logger = logging.getLogger(__name__)

EngineName = Literal["piper", "espeak-ng"]
EngineChoice = Literal["auto", "piper", "espeak-ng"]

MAX_CHARS: Final[int] = 1000
DEFAULT_TIMEOUT_S: Final[float] = 60.0
PIPER_SPEC: Final[str] = "piper-tts==1.8.0"
PIPER_TOOL_DIR: Final[str] = "tools/piper-tts-1.8.0"
PIPER_VOICE: Final[str] = "piper-voice-joe"
PIPER_VOICE_CONFIG: Final[str] = "piper-voice-joe-config"
#: Piper normalises every utterance to a peak of 1.0 before applying ``--volume``; neutral speech stays below
#: that so louder emotions (anger) have room before clipping.
PIPER_BASE_VOLUME: Final[float] = 0.75
#: The voice config's own inference defaults (en_US-joe-medium.onnx.json), scaled by ``Prosody.variation``.
PIPER_NOISE_SCALE: Final[float] = 0.667
PIPER_NOISE_W_SCALE: Final[float] = 0.8
ESPEAK_VOICE: Final[str] = "en-us"
ESPEAK_WPM: Final[int] = 175  # eSpeak NG's default rate
ESPEAK_PITCH: Final[int] = 50  # eSpeak NG's default base pitch (0-99)
ESPEAK_AMPLITUDE: Final[int] = 100  # eSpeak NG's default amplitude (0-200)
#: Peak below which synthesised audio counts as silent: one step of 16-bit PCM either side of zero.
SILENT_PEAK: Final[float] = 1.5 / 32768
#: Terminal escape sequences (CSI such as ``ESC[0m``, and two-character ``ESC x``): removed whole, not spoken.
_ESCAPES: Final[re.Pattern[str]] = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")


@dataclass(frozen=True)
class Prosody:
    """Engine-independent prosody, relative to the voice's neutral delivery.

    ``rate``: speaking-rate factor (1 = neutral, 1.2 = 20% faster). ``pitch``: base-pitch offset as a fraction
    of eSpeak NG's 0-99 pitch scale (+0.25 moves 50 to 75). ``volume``: loudness factor. ``variation``: how much
    the delivery varies (piper's noise scales; 1 = the voice's defaults)."""

    rate: float = 1.0
    pitch: float = 0.0
    volume: float = 1.0
    variation: float = 1.0

    def scaled(self, intensity: float) -> Prosody:
        """Move from neutral towards this prosody by ``intensity`` (0 = neutral, 1 = all the way)."""
        neutral = Prosody()
        return Prosody(
            rate=neutral.rate + intensity * (self.rate - neutral.rate),
            pitch=neutral.pitch + intensity * (self.pitch - neutral.pitch),
            volume=neutral.volume + intensity * (self.volume - neutral.volume),
            variation=neutral.variation + intensity * (self.variation - neutral.variation),
        )


#: Prosody of each canonical emotion at full intensity (hand-set from the vocal-affect literature above).
EMOTION_PROSODY: Final[dict[str, Prosody]] = {
    "neutral": Prosody(),
    "happiness": Prosody(rate=1.12, pitch=0.25, volume=1.05, variation=1.2),
    "sadness": Prosody(rate=0.78, pitch=-0.25, volume=0.8, variation=0.7),
    "surprise": Prosody(rate=1.10, pitch=0.40, volume=1.1, variation=1.3),
    "fear": Prosody(rate=1.20, pitch=0.30, volume=0.9, variation=1.25),
    "disgust": Prosody(rate=0.85, pitch=-0.10, volume=0.95, variation=0.9),
    "anger": Prosody(rate=1.15, pitch=0.10, volume=1.3, variation=1.2),
}
assert set(EMOTION_PROSODY) == set(CANONICAL_EMOTIONS)


@dataclass(frozen=True)
class Speech:
    """Synthesised speech.

    ``samples``: float32 mono in [-1, 1] at ``sample_rate`` Hz. ``engine``/``voice``: what spoke. ``text``: the
    cleaned text actually spoken. ``prosody``: the engine settings used (e.g. ``{"length_scale": 1.28, ...}``).
    ``seconds``: wall-clock synthesis time. ``emotions``: the resolved emotion weights (empty for none)."""

    samples: np.ndarray
    sample_rate: int
    engine: EngineName
    voice: str
    text: str
    prosody: dict[str, float]
    seconds: float
    emotions: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.samples) / self.sample_rate


# ---- emotion -> prosody ------------------------------------------------------------------------------------


def emotion_weights(emotion: str | Mapping[str, float] | None) -> dict[str, float]:
    """Resolve ``emotion`` (a name, a ``{name: weight}`` mixture, or None) to canonical names and weights summing
    to 1 (``affectlens.labels.canonical_mixture``); None gives ``{}`` (neutral delivery)."""
    return {} if emotion is None else canonical_mixture(emotion)


def emotion_prosody(emotion: str | Mapping[str, float] | None, intensity: float = 0.5) -> Prosody:
    """The prosody for ``emotion`` at ``intensity`` in [0, 1]: a mixture averages each emotion's scaled prosody
    by its weight."""
    intensity = float(intensity)
    if not 0.0 <= intensity <= 1.0:
        raise AffectLensError(f"intensity must lie in [0, 1], got {intensity}")
    mix = emotion_weights(emotion)
    if not mix:
        return Prosody()
    parts = [(EMOTION_PROSODY[name].scaled(intensity), w) for name, w in mix.items()]
    return Prosody(
        rate=sum(p.rate * w for p, w in parts),
        pitch=sum(p.pitch * w for p, w in parts),
        volume=sum(p.volume * w for p, w in parts),
        variation=sum(p.variation * w for p, w in parts),
    )


# ---- text --------------------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Drop terminal escape sequences, replace control and other non-printing characters by spaces and collapse
    whitespace; raise when nothing speakable (no letter or digit) is left or the text is longer than
    ``MAX_CHARS``."""
    if not isinstance(text, str):
        raise AffectLensError(f"text to speak must be a str, got {type(text).__name__}")
    if not text.strip():
        raise AffectLensError("text to speak is empty")
    if len(text) > 10 * MAX_CHARS:  # far too long even before cleaning: do not scan it character by character
        raise AffectLensError(f"text to speak has {len(text)} characters; the limit is {MAX_CHARS}")
    text = _ESCAPES.sub(" ", text)
    kept = [" " if unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"} else ch for ch in text]
    cleaned = " ".join("".join(kept).split())
    if len(cleaned) > MAX_CHARS:
        raise AffectLensError(
            f"text to speak has {len(cleaned)} characters; the limit is {MAX_CHARS}: split it into sentences "
            "and synthesise them one by one"
        )
    if not any(unicodedata.category(ch)[0] in {"L", "N"} for ch in cleaned):
        shown = cleaned if len(cleaned) <= 40 else cleaned[:40] + "…"
        raise AffectLensError(f"text to speak has no speakable characters (no letters or digits): {shown!r}")
    return cleaned


# ---- running an engine -------------------------------------------------------------------------------------


def _read_wav(path: Path, engine: str) -> tuple[np.ndarray, int]:
    """A PCM WAV -> (float32 mono samples in [-1, 1], sample rate)."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise AffectLensError(f"{engine} wrote no readable WAV file: {exc}") from exc
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        data = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        raise AffectLensError(f"{engine} wrote {8 * width}-bit PCM, which is not supported")
    usable = len(data) - len(data) % channels
    samples = data[:usable].reshape(-1, channels).mean(axis=1).astype(np.float32)
    return np.clip(samples, -1.0, 1.0), rate


def run_engine(
    engine: str, argv: list[str], text: str, out_name: str, workdir: Path, timeout: float
) -> tuple[np.ndarray, int]:
    """Run ``argv`` in ``workdir`` with ``text`` on stdin and read back the WAV it writes to ``workdir/out_name``.

    Raises:
        AffectLensError: the program is missing, fails (exit code and its last stderr line), runs past
            ``timeout`` seconds, or writes no audio or silence.
    """
    try:
        result = subprocess.run(
            argv, input=(text + "\n").encode(), cwd=workdir, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AffectLensError(f"{engine} took longer than {timeout:g} s and was stopped") from exc
    except OSError as exc:
        raise AffectLensError(f"{engine} could not be started ({argv[0]}): {exc}") from exc
    if result.returncode != 0:
        lines = [ln.strip() for ln in result.stderr.decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else "no message on stderr"
        raise AffectLensError(f"{engine} failed with exit code {result.returncode}: {last}")
    samples, rate = _read_wav(workdir / out_name, engine)
    if samples.size == 0 or float(np.max(np.abs(samples))) < SILENT_PEAK:
        raise AffectLensError(f"{engine} produced silence ({samples.size} samples, all zero) for {text[:40]!r}")
    return samples, rate


class Engine(Protocol):
    """A text-to-speech program: ``synthesize`` returns (samples, sample rate, settings used)."""

    name: EngineName
    voice: str

    def synthesize(
        self, text: str, prosody: Prosody, workdir: Path, timeout: float
    ) -> tuple[np.ndarray, int, dict[str, float]]: ...


# ---- piper -------------------------------------------------------------------------------------------------


def piper_candidates() -> list[Path]:
    """Where the piper executable is looked for, in order: ``$AFFECTLENS_PIPER``, the tool environment that
    ``./run`` builds (``$AFFECTLENS_VENV_ROOT`` or ``~/.cache/affectlens/venvs``, then
    ``tools/piper-tts-1.8.0/bin/piper``), then ``piper`` on PATH."""
    paths: list[Path] = []
    explicit = os.environ.get("AFFECTLENS_PIPER")
    if explicit:
        if not Path(explicit).is_file():
            logger.warning("AFFECTLENS_PIPER=%s is not a file; looking elsewhere", explicit)
        paths.append(Path(explicit))
    root = os.environ.get("AFFECTLENS_VENV_ROOT")
    venv_root = Path(root) if root else Path.home() / ".cache" / "affectlens" / "venvs"
    paths.append(venv_root / PIPER_TOOL_DIR / "bin" / "piper")
    on_path = shutil.which("piper")
    if on_path:
        paths.append(Path(on_path))
    return paths


def find_piper() -> Path | None:
    """The first executable piper in ``piper_candidates()``, or None."""
    for candidate in piper_candidates():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def piper_voice() -> tuple[Path, Path]:
    """The verified Joe voice (model, config) from the weights lookup order; hashed once per process."""
    return _verified_voice()


@cache
def _verified_voice() -> tuple[Path, Path]:
    return weights.resolve(PIPER_VOICE), weights.resolve(PIPER_VOICE_CONFIG)


class PiperEngine:
    """piper run as a program with the Joe voice (22,050 Hz). Changes only rate, volume and the noise scales."""

    name: EngineName = "piper"

    def __init__(self, executable: Path | None = None, model: Path | None = None, config: Path | None = None) -> None:
        found = executable or find_piper()
        if found is None:
            raise AffectLensError(
                "piper not found (looked in " + ", ".join(map(str, piper_candidates())) + ", and PATH); "
                f"any `./run` command (e.g. `./run shell true`) builds its tool environment ({PIPER_SPEC})"
            )
        self.executable = Path(found)
        if model is None or config is None:
            model, config = piper_voice()
        self.model, self.config = Path(model), Path(config)
        self.voice = self.model.name.removesuffix(".onnx")

    def synthesize(
        self, text: str, prosody: Prosody, workdir: Path, timeout: float
    ) -> tuple[np.ndarray, int, dict[str, float]]:
        settings = {
            "length_scale": round(1.0 / prosody.rate, 4),
            "volume": round(min(1.0, PIPER_BASE_VOLUME * prosody.volume), 4),
            "noise_scale": round(PIPER_NOISE_SCALE * prosody.variation, 4),
            "noise_w_scale": round(PIPER_NOISE_W_SCALE * prosody.variation, 4),
        }
        argv = [str(self.executable), "-m", str(self.model), "-c", str(self.config), "-f", "speech.wav"]
        for key, value in settings.items():
            argv += [f"--{key.replace('_', '-')}", f"{value:g}"]
        samples, rate = run_engine("piper", argv, text, "speech.wav", workdir, timeout)
        return samples, rate, settings


# ---- eSpeak NG ---------------------------------------------------------------------------------------------


def find_espeak() -> Path | None:
    """``espeak-ng`` on PATH, else ``espeak``, else None."""
    for name in ("espeak-ng", "espeak"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


class EspeakEngine:
    """eSpeak NG (or eSpeak) with the ``en-us`` voice: changes rate (words per minute), pitch and amplitude."""

    name: EngineName = "espeak-ng"

    def __init__(self, executable: Path | None = None, voice: str = ESPEAK_VOICE) -> None:
        found = executable or find_espeak()
        if found is None:
            raise AffectLensError("espeak-ng not found on PATH (nor espeak); install it with `apt install espeak-ng`")
        self.executable = Path(found)
        self.voice = voice

    def synthesize(
        self, text: str, prosody: Prosody, workdir: Path, timeout: float
    ) -> tuple[np.ndarray, int, dict[str, float]]:
        settings: dict[str, float] = {
            "speed_wpm": int(np.clip(round(ESPEAK_WPM * prosody.rate), 80, 450)),
            "pitch": int(np.clip(round(ESPEAK_PITCH + 100 * prosody.pitch), 0, 99)),
            "amplitude": int(np.clip(round(ESPEAK_AMPLITUDE * prosody.volume), 0, 200)),
        }
        argv = [str(self.executable), "-v", self.voice, "-b", "1", "-w", "speech.wav"]
        argv += ["-s", str(settings["speed_wpm"]), "-p", str(settings["pitch"]), "-a", str(settings["amplitude"])]
        argv.append("--stdin")
        samples, rate = run_engine("espeak-ng", argv, text, "speech.wav", workdir, timeout)
        return samples, rate, settings


# ---- public API --------------------------------------------------------------------------------------------


def available_engines() -> list[str]:
    """Engines that can run here, in the order ``"auto"`` tries them (piper needs its voice fetched too)."""
    names: list[str] = []
    if find_piper() is not None:
        try:
            piper_voice()
            names.append("piper")
        except AffectLensError as exc:
            logger.debug("piper found but its voice is not usable: %s", exc)
    if find_espeak() is not None:
        names.append("espeak-ng")
    return names


def create_engine(engine: EngineChoice = "auto") -> Engine:
    """The engine named, or for ``"auto"`` piper when installed (with its voice), else eSpeak NG."""
    if engine == "piper":
        return PiperEngine()
    if engine == "espeak-ng":
        return EspeakEngine()
    if engine != "auto":
        raise AffectLensError(f"unknown speech engine {engine!r}; choose auto, piper or espeak-ng")
    piper_reason = ""
    if find_piper() is not None:
        try:
            chosen: Engine = PiperEngine()
            logger.info("speech engine: piper (%s)", chosen.voice)
            return chosen
        except AffectLensError as exc:
            piper_reason = str(exc)
    else:
        piper_reason = "piper not found (looked in " + ", ".join(map(str, piper_candidates())) + ", and PATH)"
    if find_espeak() is not None:
        logger.info("speech engine: espeak-ng (piper unavailable: %s)", piper_reason)
        return EspeakEngine()
    raise AffectLensError(
        f"no text-to-speech engine found: {piper_reason}; espeak-ng/espeak not on PATH either. "
        f"any `./run` command (e.g. `./run shell true`) builds piper's tool environment ({PIPER_SPEC}) and `affectlens weights fetch` "
        "fetches its voice; or install eSpeak NG with `apt install espeak-ng`"
    )


def synthesize(
    text: str,
    emotion: str | Mapping[str, float] | None = None,
    intensity: float = 0.5,
    engine: EngineChoice | Engine = "auto",
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Speech:
    """Speak ``text`` with the prosody of ``emotion`` (a name, a ``{name: weight}`` mixture or None) at
    ``intensity`` in [0, 1].

    ``engine``: ``"auto"`` (piper, else eSpeak NG; logged), ``"piper"``, ``"espeak-ng"`` or an engine object.

    Raises:
        AffectLensError: empty, too long or unspeakable text; an unknown emotion; no engine; the engine failing,
            timing out or producing silence.
    """
    cleaned = clean_text(text)
    mix = emotion_weights(emotion)
    prosody = emotion_prosody(mix or None, intensity)
    tts = create_engine(engine) if isinstance(engine, str) else engine
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="affectlens-tts-") as tmp:
        samples, rate, settings = tts.synthesize(cleaned, prosody, Path(tmp), timeout)
    seconds = time.perf_counter() - start
    logger.debug("%s spoke %d characters in %.2f s (%s)", tts.name, len(cleaned), seconds, settings)
    return Speech(
        samples=samples,
        sample_rate=rate,
        engine=tts.name,
        voice=tts.voice,
        text=cleaned,
        prosody=dict(settings),
        seconds=seconds,
        emotions=mix,
    )
