"""An English word list, for saying someone's words back only when they read cleanly.

The list is pyspellchecker's English word-frequency dictionary (MIT; about 160,000 words), read from the installed
package's data file: no network, no model. A template restatement ("If I understand you right, you're saying that
...") checks every word against it, so a typo ("layed off", "extremally stressed", "can d") is not echoed back
(``docs/dialogue-replies.md``, sixth round).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from functools import lru_cache
from importlib import resources
from typing import Final

log = logging.getLogger(__name__)

#: Words the list lacks that people commonly write in a support chat (the pandemic's, common abbreviations).
EXTRA_WORDS: Final = frozenset({
    "covid", "lockdown", "lockdowns", "fiance", "fiancee", "ok", "okay", "online", "texted", "instagram", "uk", "usa",
    "tv", "pc", "gpa", "ceo", "hr", "icu", "ptsd", "adhd", "ocd",
})  # fmt: skip
#: The one-letter words of English.
_ONE_LETTER: Final = frozenset({"a", "i"})
_WORD: Final = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*")


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The word list, lower-cased; empty (with a warning) when pyspellchecker is not installed, so that callers
    treat every word as unknown rather than failing."""
    try:
        data = resources.files("spellchecker").joinpath("resources/en.json.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        log.warning("no English word list (pyspellchecker is not installed: %s); restatements are left out", exc)
        return frozenset()
    words: dict[str, int] = json.loads(gzip.decompress(data))
    return frozenset(w for w in words if len(w) > 1) | EXTRA_WORDS | _ONE_LETTER


def known_word(word: str) -> bool:
    """Whether ``word`` is an English word: in the list, or a contraction of one ("couldn't", "I've", "she's")."""
    w = word.lower().replace("’", "'")
    vocabulary = english_words()
    if w in vocabulary:
        return True
    if "'" not in w:
        return False
    base, _, ending = w.partition("'")
    if ending == "t" and base.endswith("n"):  # couldn't, don't, can't, won't
        return base in vocabulary or base[:-1] in vocabulary
    return ending in {"s", "re", "ve", "ll", "d", "m"} and base in vocabulary


def reads_as_english(text: str) -> bool:
    """Whether every word of ``text`` is an English word (``known_word``); False for text without words."""
    words = _WORD.findall(text)
    return bool(words) and all(known_word(w) for w in words)
