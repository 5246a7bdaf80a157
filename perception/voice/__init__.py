"""Voice perception: voice activity, speech recognition, prosody, speech emotion, and the pipeline that joins them.

Everything works on 16 kHz mono float32 audio in [-1, 1] (``perception.audio``); times are seconds.
"""

from perception.voice.asr import WhisperASR
from perception.voice.emotion import ProbeConfig, SpeechEmotionHead, WhisperProbe
from perception.voice.pipeline import VoicePipeline, build_voice_pipeline
from perception.voice.prosody import ProsodyAnalyzer, analyze_prosody, voice_statistics
from perception.voice.vad import SileroVAD, SpeechSegment, VadConfig

__all__ = [
    "ProbeConfig",
    "ProsodyAnalyzer",
    "SileroVAD",
    "SpeechEmotionHead",
    "SpeechSegment",
    "VadConfig",
    "VoicePipeline",
    "WhisperASR",
    "WhisperProbe",
    "analyze_prosody",
    "build_voice_pipeline",
    "voice_statistics",
]
