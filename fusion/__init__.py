"""Fusion: modality tokens -> fusion encoder -> projector into the compact LM, and calibrated late fusion.

Empty until the fusion-and-tree issue lands; see docs/ARCHITECTURE.md for what goes here.
"""
