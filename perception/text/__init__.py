"""Text perception: emotion in words (canonical distribution, GoEmotions labels, valence/arousal, salient words)."""

from perception.text.emotion import (
    CIRCUMPLEX,
    FINE_TO_CANONICAL,
    GOEMOTIONS_LABELS,
    TextEmotionConfig,
    TextEmotionDelta,
    TextEmotionModel,
    TextEmotionNetwork,
)

__all__ = [
    "CIRCUMPLEX",
    "FINE_TO_CANONICAL",
    "GOEMOTIONS_LABELS",
    "TextEmotionConfig",
    "TextEmotionDelta",
    "TextEmotionModel",
    "TextEmotionNetwork",
]
