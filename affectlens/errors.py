"""Exceptions with messages meant for people: each names the file and what is wrong with it."""

from __future__ import annotations


class AffectLensError(Exception):
    """Base class for every error AffectLens raises on purpose."""


class MediaError(AffectLensError, ValueError):
    """An input file or array cannot be used: missing, corrupt, unsupported, empty or too large."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class WeightsError(AffectLensError, RuntimeError):
    """A weight file is missing, fails its sha256 check, or is unknown to the manifest."""


class RegistryError(AffectLensError, KeyError):
    """An unknown component name was asked for."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


class SpecError(RegistryError, ValueError):
    """A component spec string is neither a registered name nor a form its kind's spec parser accepts."""
