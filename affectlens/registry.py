"""One registry per kind of component, and the ``create_*`` / ``list_models`` entry points.

A backend is added in one file: decorate its builder with ``@register("face_detector", "name")``
(or the kind-specific shortcut) and import that file from its package's ``__init__``. A kind whose options
are open-ended (any local Hugging Face causal LM for ``language_model``) also registers one spec parser,
which turns a string that is not a registered name (``hf:<repo-or-path>``) into a registered name + arguments.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args

from affectlens.errors import RegistryError

logger = logging.getLogger(__name__)

ComponentKind = Literal[
    "face_detector",
    "face_landmarker",
    "face_expression",
    "vad",
    "asr",
    "speech_emotion",
    "text_emotion",
    "language_model",
]
COMPONENT_KINDS: tuple[str, ...] = get_args(ComponentKind)

#: Modules whose import registers the built-in backends of each kind.
_BUILTIN_MODULES: dict[str, tuple[str, ...]] = {
    "face_detector": ("perception.face.detector",),
    "face_landmarker": ("perception.face.landmarks",),
    "face_expression": ("perception.face.expression",),
    "vad": ("perception.voice.vad",),
    "asr": ("perception.voice.asr",),
    "speech_emotion": ("perception.voice.emotion",),
    "text_emotion": ("perception.text.emotion",),
    "language_model": ("fusion.lm",),
}

Builder = Callable[..., Any]
F = TypeVar("F", bound=Builder)
#: ``parser(spec) -> (registered name, builder keyword arguments)``; raises ``ValueError`` on a bad spec.
SpecParser = Callable[[str], tuple[str, dict[str, Any]]]
P = TypeVar("P", bound=SpecParser)

_REGISTRY: dict[str, dict[str, Builder]] = {kind: {} for kind in COMPONENT_KINDS}
_DEFAULTS: dict[str, str] = {
    "face_detector": "centerface",
    "face_landmarker": "mediapipe-facemesh",
    "face_expression": "affectlens-expression",
    "vad": "silero",
    "asr": "whisper-tiny.en",
    "speech_emotion": "whisper-probe",
    "text_emotion": "minilm-goemotions",
    "language_model": "smollm2-135m-instruct",
}
_SPEC_PARSERS: dict[str, SpecParser] = {}


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise RegistryError(f"unknown component kind {kind!r}; valid kinds: {', '.join(COMPONENT_KINDS)}")


def register(kind: ComponentKind, name: str) -> Callable[[F], F]:
    """Register ``builder(pretrained: bool, **overrides)`` under ``name`` for ``kind``."""
    _check_kind(kind)

    def decorator(builder: F) -> F:
        table = _REGISTRY[kind]
        if name in table and table[name] is not builder:
            raise RegistryError(f"{kind} {name!r} is registered twice")
        table[name] = builder
        return builder

    return decorator


def register_spec_parser(kind: ComponentKind) -> Callable[[P], P]:
    """Register the one parser for the specs of ``kind`` that are not registered names (see the module doc)."""
    _check_kind(kind)

    def decorator(parser: P) -> P:
        if _SPEC_PARSERS.get(kind, parser) is not parser:
            raise RegistryError(f"{kind} has a spec parser already")
        _SPEC_PARSERS[kind] = parser
        return parser

    return decorator


def _load_builtins(kind: str) -> None:
    for module in _BUILTIN_MODULES.get(kind, ()):
        importlib.import_module(module)


def list_models(kind: ComponentKind) -> list[str]:
    """Names registered for ``kind``, sorted."""
    _check_kind(kind)
    _load_builtins(kind)
    return sorted(_REGISTRY[kind])


def default_model(kind: ComponentKind) -> str:
    """The name used when a caller does not choose one."""
    _check_kind(kind)
    return _DEFAULTS[kind]


def create(kind: ComponentKind, name: str | None = None, *, pretrained: bool = True, **overrides: Any) -> Any:
    """Build the component ``name`` of ``kind`` (the default when ``name`` is None)."""
    _check_kind(kind)
    _load_builtins(kind)
    name = name or _DEFAULTS[kind]
    table = _REGISTRY[kind]
    if name not in table and kind in _SPEC_PARSERS:
        name, parsed = _SPEC_PARSERS[kind](name)
        overrides = {**parsed, **overrides}
    if name not in table:
        raise RegistryError(f"unknown {kind} {name!r}; registered: {', '.join(sorted(table)) or 'none'}")
    logger.debug("building %s %r (pretrained=%s)", kind, name, pretrained)
    return table[name](pretrained=pretrained, **overrides)


def create_face_detector(name: str | None = None, *, pretrained: bool = True, **overrides: Any) -> Any:
    """Build a face detector (see ``list_models("face_detector")``)."""
    return create("face_detector", name, pretrained=pretrained, **overrides)


def create_face_landmarker(name: str | None = None, *, pretrained: bool = True, **overrides: Any) -> Any:
    """Build a face landmarker (see ``list_models("face_landmarker")``)."""
    return create("face_landmarker", name, pretrained=pretrained, **overrides)


def create_face_expression(name: str | None = None, *, pretrained: bool = True, **overrides: Any) -> Any:
    """Build a facial expression model (see ``list_models("face_expression")``)."""
    return create("face_expression", name, pretrained=pretrained, **overrides)


def create_vad(name: str | None = None, *, pretrained: bool = True, **overrides: Any) -> Any:
    """Build a voice activity detector (see ``list_models("vad")``)."""
    return create("vad", name, pretrained=pretrained, **overrides)


def create_asr(name: str | None = None, *, pretrained: bool = True, **overrides: Any) -> Any:
    """Build a speech recogniser (see ``list_models("asr")``)."""
    return create("asr", name, pretrained=pretrained, **overrides)


def create_speech_emotion(name: str | None = None, *, pretrained: bool = True, **overrides: Any) -> Any:
    """Build a speech emotion model (see ``list_models("speech_emotion")``)."""
    return create("speech_emotion", name, pretrained=pretrained, **overrides)


def create_text_emotion(name: str | None = None, *, pretrained: bool = True, **overrides: Any) -> Any:
    """Build a text emotion model (see ``list_models("text_emotion")``)."""
    return create("text_emotion", name, pretrained=pretrained, **overrides)


def create_language_model(name: str | None = None, *, pretrained: bool = True, **overrides: Any) -> Any:
    """Build a compact causal LM: a registered name (``list_models("language_model")``), a local model folder or
    ``.gguf`` file, or ``hf:<repo-or-path>`` (see ``fusion.lm``); nothing is downloaded unless the user opts in."""
    return create("language_model", name, pretrained=pretrained, **overrides)
