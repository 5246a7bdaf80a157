"""Perception: media decoding and the per-modality encoders (face today; voice and words next)."""
