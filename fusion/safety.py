"""Risk recognition for the empathic dialogue: suicidal ideation, self-harm, harm to or from others, over-attachment.

``RiskDetector.assess(text, history)`` reads a message (and the user's earlier turns) with documented, transparent
regular expressions (``RISK_RULES``) over normalised text (lower case, curly quotes straightened, contractions and
common chat spellings expanded), and the message and the earlier turns by their meaning too
(``fusion.safety_semantic``: a classifier over sentence embeddings, whose confident reading is a ``strong`` cue
named ``meaning``; ``SEMANTIC_RULE``), and returns a ``RiskAssessment``: a level (``none`` | ``concern`` |
``crisis``), the categories, a score, the matched phrases with their character spans in the original text, and one
sentence saying why. ``crisis_reply`` and ``boundary_reply`` are the replies the affective tree uses instead of its
template when the level is ``crisis`` or the person leans on the assistant as their only support; ``check_reply``
lists what is wrong with a proposed reply (claims to be human, manipulation, secrecy, promises it cannot keep,
encouraging harm).

How a message is read:

- Each rule has a **strength**: ``strong`` (a crisis on its own: "I want to kill myself", "everyone would be
  better off without me", "he said he'd hurt me if I tell"), ``warning`` (a warning sign: a farewell, a note, "I'm
  a burden", intent to hurt someone that is often hyperbole), ``borderline`` (vague distress: "I can't do this
  anymore", "I feel hopeless"), ``modifier`` (means or timing: "I have a knife", "tonight"; they only count next
  to another cue), ``mention`` (third-person, news or fiction: "the novel's hero kills himself") and
  ``attachment`` ("you're the only one I can talk to").
- A match is dropped when it is **negated** in its clause ("I'm not suicidal", "I would never…"; "not sure",
  "can't stop" and "no one" are not negations), when it overlaps an **idiom** (``IDIOMS``: "killing it", "dying
  to", "to die for", "killing myself at work"), when its rule's **guard** sees a harmless context in the sentence
  (a game for "kill him", an accident for "cut myself", a move or charity for "giving my things away", a
  relationship for "ending things with him"), or when a first-person rule finds another subject ("she wants to
  die" is not "I want to die"). A rule's **soften** context (embarrassment around "I wanted to die") and a
  **fiction or news frame** around a quoted first-person phrase or a third-person one make it a ``mention``.
- Points (``STRENGTH_POINTS``): strong 3, warning 2, borderline 1, modifier 1 (2 for a weapon or pills; only
  beside a strong, warning or borderline cue), mention and attachment 0. **Crisis**: 3 points or more, counting
  the earlier turns' points too when the message has a counted cue of its own (an earlier "I've written a note"
  raises "I'm so tired of everything" to crisis). **Concern**: any cue in the message, or earlier turns worth 2
  or more on their own (counted at ``HISTORY_DISCOUNT``). The latest ``HISTORY_TURNS`` earlier turns are read, by
  both readers; a turn counts the patterns' points or the meaning's, whichever is more. ``crisis_support``: a
  crisis, or a concern that only an earlier disclosure raised (``after_crisis``, answered by ``follow_up_reply``).
  ``score = 1 - 0.5 ** points`` (0.5: one borderline cue; 0.875: the crisis line), 0 for ``none``.

Limits: English only; patterns see phrasings someone wrote down, not meaning (the semantic reader catches many of
the new phrasings they miss, ``docs/safety.md``), so new euphemisms, sarcasm, long indirect stories and heavy
misspelling can slip through, and hyperbole that looks literal ("I'll kill myself if this
meeting runs over") is treated as meant, on purpose (only "want to die" beside embarrassment or laughter, and
"kms", are read as likely figures of speech, and even they get a gentle check-in). It is a safety net for a chat assistant, not a clinical
screening tool, and it never decides anything for a person: it changes what the assistant says and points to
people who can help. ``affectlens eval safety`` on ``docs/safety-eval.csv``, ``docs/safety-eval-fresh.csv``,
``docs/safety-eval-blind-2.csv`` and, with earlier turns, ``docs/safety-eval-history-blind.csv`` measures it.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args

if TYPE_CHECKING:
    from fusion.safety_semantic import SemanticReading, SemanticRiskModel

logger = logging.getLogger(__name__)

__all__ = [
    "CATEGORIES",
    "HELP",
    "HISTORY_DISCOUNT",
    "HISTORY_TURNS",
    "IDIOMS",
    "LEVELS",
    "REPLY_CHECKS",
    "RISK_RULES",
    "SEMANTIC_RULE",
    "STRENGTH_POINTS",
    "ZERO_POINT_SCORES",
    "RiskAssessment",
    "RiskCue",
    "RiskDetector",
    "RiskRule",
    "after_crisis",
    "boundary_reply",
    "check_in",
    "check_reply",
    "crisis_reply",
    "crisis_support",
    "disclosure_turn",
    "follow_up_reply",
    "normalise",
]

Level = Literal["none", "concern", "crisis"]
LEVELS: Final[tuple[Level, ...]] = get_args(Level)
Category = Literal["suicidal_ideation", "self_harm", "harm_to_others", "harm_from_others", "attachment"]
CATEGORIES: Final[tuple[Category, ...]] = get_args(Category)
Strength = Literal["strong", "warning", "borderline", "modifier", "mention", "attachment"]
Subject = Literal["self", "other"]

#: Points toward crisis per strength (see the module docstring); a modifier counts only beside another cue.
STRENGTH_POINTS: Final[dict[str, int]] = {
    "strong": 3, "warning": 2, "borderline": 1, "modifier": 1, "mention": 0, "attachment": 0,
}  # fmt: skip
#: The score of a concern raised only by cues worth no points (``score = 1 - 0.5 ** points`` otherwise).
ZERO_POINT_SCORES: Final[dict[str, float]] = {"mention": 0.25, "attachment": 0.3}
#: History alone (the message has no counted cue) counts this share of its points.
HISTORY_DISCOUNT: Final = 0.5
_CRISIS_POINTS: Final = 3
#: Earlier turns a ``RiskDetector`` reads (the latest): a disclosure keeps the follow-up reply for this many turns,
#: then the conversation goes back to the planner. The shortest window that kept the crisis recall of
#: ``docs/safety-eval-history-dev.csv`` (0.95 with every turn) while answering ESConv valid's seekers with crisis
#: support least often (2.8% of their turns against 6.1% with every turn; docs/safety.md).
HISTORY_TURNS: Final = 3
#: Semantic readings a ``RiskDetector`` remembers (its conversation's earlier turns are read on every turn).
_READINGS_KEPT: Final = 256
_HISTORY_CONCERN_POINTS: Final = 2


# ---- normalisation ---------------------------------------------------------------------------------------------

_QUOTES: Final = {"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
                  "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"'}  # fmt: skip
#: Contractions and chat spellings, expanded so one pattern covers "don't", "dont" and "do not".
_EXPANSIONS: Final[dict[str, str]] = {
    "can't": "can not", "cannot": "can not", "cant": "can not", "won't": "will not", "shan't": "shall not",
    "ain't": "am not", "i'm": "i am", "im": "i am", "i've": "i have", "ive": "i have", "i'd": "i would",
    "i'll": "i will", "let's": "let us", "wanna": "want to", "gonna": "going to", "gotta": "got to",
    "dont": "do not", "doesnt": "does not", "didnt": "did not", "isnt": "is not", "wasnt": "was not",
    "arent": "are not", "werent": "were not", "havent": "have not", "hasnt": "has not", "couldnt": "could not",
    "wouldnt": "would not", "shouldnt": "should not", "u": "you", "ur": "your", "r": "are", "youre": "you are",
    "noone": "no one", "no-one": "no one", "myslef": "myself", "mysef": "myself", "mself": "myself",
}  # fmt: skip
_EXPAND = re.compile(r"(?<![\w'])(?:" + "|".join(re.escape(k) for k in sorted(_EXPANSIONS, key=len, reverse=True))
                     + r")(?![\w'])")  # fmt: skip
_PRONOUN_IS = re.compile(r"\b(it|that|he|she|what|there|who|where|here|how)'s\b")
_SUFFIXES = re.compile(r"\b(\w+)(n't|'re|'ve|'ll|'d|'m)\b")
_SUFFIX_WORDS: Final = {"n't": " not", "'re": " are", "'ve": " have", "'ll": " will", "'d": " would", "'m": " am"}
_SPACES = re.compile(r"[ \t\r\f\v]+")


def _sub_mapped(
    text: str, index: list[int], pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str]
) -> tuple[str, list[int]]:
    """``pattern.sub(repl, text)`` that also carries the map from each output character to an original offset."""
    out: list[str] = []
    new_index: list[int] = []
    pos = 0
    for m in pattern.finditer(text):
        out.append(text[pos : m.start()])
        new_index.extend(index[pos : m.start()])
        replacement = repl(m)
        width = max(m.end() - m.start(), 1)
        out.append(replacement)
        new_index.extend(index[min(m.start() + min(k, width - 1), len(index) - 1)] for k in range(len(replacement)))
        pos = m.end()
    out.append(text[pos:])
    new_index.extend(index[pos:])
    return "".join(out), new_index


def normalise(text: str) -> tuple[str, list[int]]:
    """``text`` in the form the rules read (lower case, straight quotes, contractions expanded, single spaces)
    and, per character of it, the offset of the original character it came from."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        for c in _QUOTES.get(ch, ch).lower():
            chars.append(c)
            index.append(i)
    s = "".join(chars)
    s, index = _sub_mapped(s, index, _EXPAND, lambda m: _EXPANSIONS[m.group(0)])
    s, index = _sub_mapped(s, index, _PRONOUN_IS, lambda m: m.group(1) + " is")
    s, index = _sub_mapped(
        s, index, _SUFFIXES,
        lambda m: m.group(1) + _SUFFIX_WORDS[m.group(2)],
    )  # fmt: skip
    s, index = _sub_mapped(s, index, _SPACES, lambda m: " ")
    return s, index


# ---- the rules -------------------------------------------------------------------------------------------------

_MYSELF = r"(?:myself|my self)"
_THEMSELVES = r"(?:himself|herself|themselves|themself)"
_CLOSE = (
    r"(?:friend|best friend|bestie|bff|brother|sister|son|daughter|mom|mum|mother|dad|father|partner|boyfriend|"
    r"girlfriend|husband|wife|roommate|flatmate|classmate|coworker|co-worker|colleague|cousin|kid|child|student|"
    r"teammate|neighbou?r|ex)"
)
_ABUSER = (
    r"(?:he|she|they|my (?:\w+ ){0,2}?(?:husband|wife|boyfriend|girlfriend|partner|ex|dad|father|stepdad|"
    r"stepfather|mom|mum|mother|stepmom|stepmum|stepmother|brother|sister|uncle|aunt|parents?|coach|teacher|boss|"
    r"roommate|flatmate|carer|caregiver|grandpa|grandfather|cousin))"
)
_PEOPLE = (
    r"(?:\w+ )?(?:husband|wife|boyfriend|girlfriend|partner|ex|dad|father|stepdad|stepfather|mom|mum|mother|stepmom|"
    r"stepmum|brother|sister|boss|teacher|coworker|co-worker|colleague|roommate|flatmate|neighbou?rs?|son|daughter|"
    r"kids?|children|family|friends?|cousin|uncle|aunt|classmates?|manager|landlord|ex-\w+)"
)
_GAME_CONTEXT = (
    r"\b(?:game|games|gaming|round|match|fortnite|minecraft|valorant|call of duty|cod|overwatch|league|apex|raid|"
    r"boss|level|pvp|server|lobby|respawn|paintball|laser tag|chess|poker|debate|quiz|trivia|tournament|dungeon|"
    r"dnd|d&d|campaign|rematch|ranked|noob|headshot|squad|xbox|playstation|ps5|steam)\b"
)
_ACCIDENT_CONTEXT = (
    r"\b(?:accident|accidentally|by mistake|shaving|cooking|chopping|slicing|kitchen|slipped|paper cut|nail|glass|"
    r"fell|gym|workout|lifting|playing|football|soccer|hiking|skiing|cycling|bike|pan|oven|stove|iron|garden|"
    r"gardening|sport)\b"
)
#: Sentences with these words frame a quoted first-person phrase or a third-person one as fiction or news.
FRAMES: Final = re.compile(
    r"\b(?:novel|book|film|movie|show|series|episode|character|hero|heroine|protagonist|villain|story|plot|song|"
    r"lyrics?|poem|play|musical|opera|documentary|news|article|headline|reported|report|newspaper|podcast|history|"
    r"historian|essay|lecture|chapter|author|writer|scene|fiction|tv|netflix|anime|manga|comic|script|biography|"
    r"shakespeare|hamlet|juliet)\b"
)
#: Idioms: a match overlapping one of these is dropped ("killing it", "dying to", "to die for", ...).
IDIOMS: Final = re.compile(
    r"\bkill(?:ing|ed|s)? it\b|\bdying (?:to|for|of)\b|\bto die for\b|\bkill(?:ing)? time\b|"
    r"\bdie (?:of|from) (?:laughter|laughing|embarrassment|shame|boredom|cringe|cuteness|happiness|curiosity)\b|"
    r"\bdie on (?:this|that) hill\b|\bdied laughing\b|\bkill(?:ing|ed|s)? (?:him|her|them) with kindness\b|"
    r"\bkill(?:ing|ed|s)? (?:myself|my self|himself|herself|themselves|yourself) (?:at|over|for|trying|working|"
    r"studying|laughing|to (?:finish|get|make|meet|keep|pass|please|impress)|with (?:work|overtime|studying|"
    r"training|exercise|stress|all (?:that|this|the) (?:work|overtime|studying|training|exercise)))\b"
)
_NEGATOR = re.compile(
    r"\b(?:not|never|no|nor|neither|nothing)\b(?! (?:sure|certain|know|knowing|stop|help|wait|one|longer|"
    r"reason|point|way))"
)
_CLAUSE_BREAK = re.compile(r"[.!?;,:\n\"]|\b(?:and|but|because|so|though|although|yet|or|then)\b")
_SENTENCE_BREAK = re.compile(r"[.!?\n]+")
_SUBJECT = re.compile(
    r"\b(i|me|we|you|he|she|they|someone|somebody|character|hero|heroine|protagonist|villain|narrator|man|woman|"
    r"guy|girl|boy|friend|brother|sister|mom|mum|dad|son|daughter|boyfriend|girlfriend|husband|wife|partner)\b"
)


@dataclass(frozen=True)
class RiskRule:
    """One documented pattern: what it recognises (``describes``, a verb phrase about the writer: "says they want
    to die"), its ``category`` (``None`` for modifiers, which take the category of the cues they go with),
    ``strength`` and ``subject`` (``other``: someone else is at risk). ``guard``: sentence context that cancels it;
    ``soften``: sentence context that makes it a mention; ``check_subject``: a verb-first pattern that needs "I"
    (or no other subject) before it in its clause; ``negatable``: a negation before it in its clause cancels it;
    ``points``: its own points toward crisis instead of its strength's."""

    name: str
    category: Category | None
    strength: Strength
    describes: str
    pattern: re.Pattern[str]
    subject: Subject = "self"
    guard: re.Pattern[str] | None = None
    soften: re.Pattern[str] | None = None
    check_subject: bool = False
    negatable: bool = True
    points: int | None = None

    @property
    def weight(self) -> int:
        """Points toward crisis: ``STRENGTH_POINTS`` of its strength unless the rule sets its own."""
        return STRENGTH_POINTS[self.strength] if self.points is None else self.points


def _rule(
    name: str, category: Category | None, strength: Strength, describes: str, *patterns: str,
    subject: Subject = "self", guard: str | None = None, soften: str | None = None, check_subject: bool = False,
    negatable: bool = True, points: int | None = None,
) -> RiskRule:  # fmt: skip
    pattern = re.compile("|".join(f"(?:{p})" for p in patterns))
    return RiskRule(
        name, category, strength, describes, pattern, subject,
        re.compile(guard) if guard else None, re.compile(soften) if soften else None, check_subject, negatable, points,
    )  # fmt: skip


_SI: Final = "suicidal_ideation"
_SH: Final = "self_harm"
_TO: Final = "harm_to_others"
_FROM: Final = "harm_from_others"
_ATT: Final = "attachment"

#: Every pattern the detector uses, read over ``normalise``d text. Order does not matter; overlapping matches keep
#: the strongest.
RISK_RULES: Final[tuple[RiskRule, ...]] = (
    # -- suicidal ideation, direct
    _rule("kill_self", _SI, "strong", "speaks of killing themselves",
          rf"\b(?:kill|killing|killed|kil|k1ll|unalive|unaliving) {_MYSELF}\b", rf"\bto off {_MYSELF}\b",
          check_subject=True),
    _rule("suicidal", _SI, "strong", "says they feel suicidal",
          r"\b(?:i am|i feel|i have been|i have felt|i was|i get|i got|i keep|feeling|feel|been|getting|so|very|"
          r"really|pretty|kind of|quite) (?:(?!not\b|never\b|no\b)\w+ )?sui?ci?d(?:al|ial|le)\b",
          r"\bsui?ci?d(?:al|ial) (?:again|thoughts|feelings|urges|tonight|today|lately|right now|these days)\b",
          r"\b(?:thinking|think|thought|considering|consider|contemplating|contemplate|planning|plan|attempt|"
          r"attempted|attempting|commit|committing|try|tried|trying) (?:about |of )?(?:committing |"
          r"attempting )?(?:sui?ci?de|sewer slide)\b(?! (?:prevention|awareness|rates?|statistics|hotlines?|helplines?|"
          r"lines?|research|training|risk|bombers?|squad|note in the))", check_subject=True),
    _rule("want_to_die", _SI, "strong", "says they want to die",
          r"\b(?:want|wanted|wish|wished|wishing|going|ready|planning|plan|deserve|need|hope|trying) (?:to )?"
          r"(?:just |really |simply )?die\b(?! (?:of|from|laughing|on))",
          r"\bhope i (?:just )?die\b", r"\b(?:wish|wished) i (?:was|were|had been|could be) dead\b",
          r"\bbetter off dead\b", check_subject=True,
          soften=r"\b(?:embarrass\w*|mortif\w*|cringe|awkward|humiliat\w*|so funny|laugh\w*|lol|lmao|haha)\b"),
    _rule("end_life", _SI, "strong", "speaks of ending their life",
          r"\b(?:end|ending|ended|take|taking|took) (?:my|my own) life\b", r"\bend(?:ing)? it all\b",
          r"\b(?:want|wanted|going|ready|planning|plan|decided|thinking about|think about|thought about|thinking of|"
          r"think of|tempted|about) (?:to )?(?:just )?end(?:ing)? (?:it|things|everything)\b"
          r"(?! (?:with|between|off|for (?:him|her|them|us)))",
          check_subject=True,
          guard=r"\b(?:boyfriend|girlfriend|relationship|partner|breakup|break up|husband|wife|marriage|meeting|"
                r"call|contract|lease|subscription|season|series|friendship|job|chat)\b"),
    _rule("not_want_to_live", _SI, "strong", "says they do not want to live",
          r"\b(?:do not|does not|no longer|not|never) (?:really |even )?(?:want|wish|feel like) (?:to )?"
          r"(?:be alive|exist|keep living|stay alive|wake up(?! (?:early|at|before|for|so|this early|on|in)\b)|"
          r"go on(?! (?:a|the|holiday|vacation|trip|date|stage|tour|with|that|this|another)\b)|"
          r"carry on(?! with\b)|live(?! (?:in|at|with|near|there|here|on|under|together|alone|abroad|somewhere|"
          r"anywhere|nearby|so far|by)\b))\b",
          r"\b(?:do not|no longer) (?:really |even )?want to be (?:here|around|alive) (?:anymore|any more|any longer|"
          r"on this earth|in this world)\b",
          r"\bnot sure (?:if |whether )?i (?:want|want to|can) (?:to )?(?:live|be alive|be here|go on|keep going|"
          r"exist|keep living)\b"),
    _rule("never_born", _SI, "strong", "wishes they had never been born",
          r"\bwish(?:ed)? i (?:had |would )?(?:never been|was never|were never|had not been|was not|were not) "
          r"(?:born|alive)\b"),
    _rule("never_wake", _SI, "strong", "wants to sleep and never wake up",
          r"\b(?:sleep|go to sleep|fall asleep|close my eyes|drift off) and (?:never|not) wake up\b",
          r"\bnever wake up (?:again|ever)\b", r"\b(?:hope|wish|pray) i (?:do not|never) wake up\b"),
    _rule("better_off_without", _SI, "strong", "feels others would be better off without them",
          r"\b(?:better|easier|happier) (?:off )?(?:without me|if i (?:was|were|was not|were not|died|disappeared|"
          r"had never been born|am gone|was gone|were gone)\b)",
          r"\b(?:no one|nobody|nobody) (?:would|will) (?:even )?(?:care|notice|miss me|be sad|cry)(?: at all)? "
          r"(?:if|when) i (?:died|was gone|were gone|disappeared|die|am gone|was dead|were dead|killed myself)\b",
          r"\bif i (?:disappeared|died|was gone|were gone)(?: tomorrow| today)?,? (?:no one|nobody) (?:would|will) "
          r"(?:even )?(?:care|notice|miss me)\b"),
    _rule("disappear_forever", _SI, "strong", "wants to disappear for good",
          r"\b(?:want|wish i could|wish to|going|just want|would like) (?:to )?(?:just )?(?:disappear|vanish|fade "
          r"away)(?: \w+)? (?:forever|for good|permanently|and never come back)\b",
          r"\b(?:cease to exist|stop existing|not exist anymore|not to exist)\b", check_subject=True),
    _rule("no_point_living", _SI, "strong", "sees no point in living",
          r"\bwhat is (?:even )?the point (?:of|in) (?:going on|living|life|being alive|carrying on|keeping going|"
          r"staying alive|existing|anything anymore|it all|me)\b",
          r"\bno (?:reason|point) (?:for me )?(?:to|in) (?:live|living|go on|going on|keep going|stay alive|staying "
          r"alive|be alive|exist|existing|keep living)\b",
          r"\bnothing (?:left )?to live for\b",
          r"\b(?:life|living|my life) is (?:not|no longer) worth (?:living|it)\b", r"\bnot worth living\b"),
    _rule("tired_of_living", _SI, "strong", "is tired of living",
          r"\b(?:tired|sick|done) (?:of|with) (?:living|being alive|life|existing|my life)\b(?! (?:in|at|as|like)\b)"),
    _rule("giving_away", _SI, "strong", "is giving their belongings away",
          r"\b(?:giving|gave|give|given) (?:away )?(?:all )?(?:of )?my (?:things|stuff|belongings|possessions|"
          r"valuables|pets?) away\b",
          r"\b(?:giving|gave|given) away (?:all )?(?:of )?my (?:things|stuff|belongings|possessions|valuables|pets?)\b",
          guard=r"\b(?:charity|donat\w*|moving|move|declutter\w*|minimalis\w*|garage sale|yard sale|car boot|"
                r"spring clean\w*|thrift|goodwill|new flat|new house|abroad)\b"),
    _rule("method", _SI, "strong", "asks about or describes a way to die",
          r"\bhow (?:many|much) (?:\w+ ){0,3}(?:would it take|does it take|would i need|do i need|to take|should i "
          r"take) (?:for me )?to (?:die|kill|overdose|od|not wake up|end it)\b",
          r"\b(?:painless|easiest|quickest|fastest|best|surest|least painful|quietest) (?:way|method|ways|methods) "
          r"to (?:die|kill myself|end it|end my life|go)\b",
          r"\b(?:going|want|planning|plan|thinking about|think about|about|tried|trying|decided) (?:to )?"
          r"(?:overdose|overdosing|od)\b",
          r"\b(?:took|swallowed|taken|take|have taken) (?:a whole|the whole|all (?:of )?(?:my|the|these)|a bottle of|"
          r"a handful of|the rest of (?:my|the)|way too many|too many) (?:bottle of |packet of )?(?:\w+ )?(?:pills|"
          r"tablets|meds|medication|painkillers|paracetamol|tylenol|ibuprofen|sleeping pills)\b",
          r"\b(?:saving|saving up|stockpiling|hoarding|collecting) (?:up )?(?:my |some |all my )?(?:\w+ )?(?:pills|"
          r"tablets|meds|medication|painkillers)\b",
          r"\b(?:tied|tie|tying|bought|buy|got) (?:a|the) noose\b",
          r"\b(?:jump|jumping) (?:off|from|in front of) (?:a |the |my )?(?:\w+ )?(?:bridge|roof|building|train|"
          r"balcony|cliff|ledge|tracks|car|bus|tower)\b", check_subject=True,
          guard=r"\b(?:lake|sea|water|pool|diving|bungee|parachute|swim\w*|river jump|trampoline|stunt)\b"),
    _rule("not_around_long", _SI, "strong", "says they will not be around much longer",
          r"\b(?:will not|am not going to) be (?:around|here|a problem|a burden) (?:much longer|for (?:much )?longer|"
          r"anymore|for long)\b",
          r"\byou will not (?:have to )?(?:hear from|see|deal with) me (?:again|anymore|much longer)\b",
          r"\bwill not have to (?:deal with|worry about) me (?:anymore|much longer|for long)\b"),
    _rule("note_final", _SI, "strong", "has written a goodbye note",
          r"\b(?:written|wrote|writing|left|leaving|finished|drafted) (?:a |my |the )?(?:suicide|goodbye|farewell|"
          r"final|last) (?:note|letter|message)s?\b"),
    # -- warning signs
    _rule("note", _SI, "warning", "has written a note",
          r"\b(?:i have|i had|i) (?:written|wrote|finished|left) (?:a|my|the) (?:note|letter)s?"
          r"(?= *(?:$|[.!?;,\n]|and\b|for (?:everyone|my \w+|them|when)))"),
    _rule("farewell", _SI, "warning", "says goodbye",
          r"\bthis is (?:my )?(?:goodbye|last message|final message)\b", r"\bgoodbye (?:forever|cruel world|world)\b",
          r"\b(?:tell|let) (?:my \w+|them|everyone|my family|him|her) (?:know )?(?:that )?i (?:love|loved) "
          r"(?:them|you all|"
          r"him|her|them all)\b",
          r"\btake care of my (?:\w+ ){0,2}?(?:for me|when i am gone|after i am gone)\b",
          r"\b(?:tonight|today) is the (?:night|day)\b", r"\bi have made (?:my )?peace with (?:it|dying|everything)\b"),
    _rule("burden", _SI, "warning", "feels like a burden",
          r"\b(?:i am|i feel like|i feel|feel like|just) (?:such |a |just |nothing but |only )*(?:a )?burden\b",
          r"\bi (?:only |just )?(?:ruin|make) (?:everything|everyone'?s? lives?) worse\b", check_subject=True),
    _rule("rather_be_dead", _SI, "warning", "would rather be dead",
          r"\b(?:would|had) rather (?:just )?be dead\b(?! than)"),
    _rule("cannot_keep_safe", _SH, "strong", "says they cannot keep themselves safe",
          r"\b(?:can not|not able to|unable to|do not know if i can|not sure i can|do not think i can|can no longer) "
          r"keep (?:myself|me) safe\b",
          r"\b(?:i am not|not|do not feel) safe (?:from|around|with) myself\b",
          r"\b(?:scared|afraid|terrified) (?:of|about) what i (?:might|will|could|would) do to myself\b"),
    # -- suicidal ideation, vague distress
    _rule("cannot_go_on", _SI, "borderline", "says they cannot go on",
          r"\b(?:can not|not able to|unable to) (?:do this|take (?:it|this)|go on|keep going|cope|handle (?:it|this|"
          r"life)|carry on|bear (?:it|this))(?: \w+){0,2}? (?:anymore|any more|any longer)\b",
          r"\bi give up on (?:everything|life|myself|living)\b"),
    _rule("hopeless", _SI, "borderline", "sounds hopeless",
          r"\b(?:i|i am|i feel|i am feeling|i have been feeling|i felt|feeling) (?:so |completely |totally |utterly |"
          r"really |very |just )?(?:hopeless|worthless|empty inside|dead inside|numb inside|trapped)\b",
          r"\bi hate (?:myself|my life|being alive)\b", r"\bnothing matters (?:anymore|any more|to me)\b",
          r"\bno way out\b", r"\bwhat is (?:even )?the point(?: anymore| of anything| of trying| of (?:it|this))?"
          r"(?= *(?:$|[?.!\n,]))"),
    _rule("kms", _SI, "borderline", "writes \"kms\" (kill myself), often said in passing", r"\bkms\b"),
    _rule("make_it_stop", _SI, "borderline", "wants everything to stop",
          r"\b(?:just )?want (?:it all|everything|the pain|this|it|all of this|the thoughts) to (?:stop|end|be over)\b",
          r"\b(?:tired|sick|done) (?:of|with) (?:everything|it all|fighting|trying|all of it)\b",
          r"\bwant to disappear\b(?! into)", r"\bsleep forever\b(?! lol)", check_subject=True),
    # -- self-harm
    _rule("self_harm", _SH, "strong", "speaks of hurting themselves",
          r"\b(?:want|wanted|urge|urges|going|need|needed|tempted|started|start|been|keep|kept|thinking about|"
          r"think about|thought about|feel like|felt like|trying not|try not|can not stop|could not stop|relapsed|"
          r"still) (?:to )?(?:hurt|hurting|harm|harming|cut|cutting|burn|burning|punish|punishing|scratch|"
          rf"scratching|hit|hitting|starve|starving) {_MYSELF}\b",
          rf"\b(?:cut|cutting|burned|burnt|burning|hurt|harmed|harming|scratched|hit) {_MYSELF} (?:again|on purpose|"
          r"deliberately|last night|every night|to feel (?:something|better|anything)|to cope)\b",
          r"\bcutting again\b(?! (?:the|back|down|on|costs?|prices|my hair|hair|class|classes|corners|ties|ribbons|"
          r"paper|wood)\b)",
          r"\b(?:i|been|started|keep|still|relapsed) (?:\w+ )?self[- ]?harm(?:ing|ed)?\b",
          r"\b(?:slit|slitting|slash|slashing) my wrists?\b",
          r"\b(?:relapsed|relapse)\b[^.!?\n]*\b(?:cutting|self[- ]?harm|blades?|razors?)\b", check_subject=True),
    _rule("self_injury", _SH, "warning", "says they cut or burned themselves",
          rf"\bi (?:cut|burned|burnt|scratched) (?:{_MYSELF}|my (?:arms?|wrists?|thighs?|legs?|skin|stomach))\b",
          guard=_ACCIDENT_CONTEXT),
    # -- harm from others
    _rule("threatened", _FROM, "strong", "is being threatened with harm",
          r"\b(?:said|says|told me|tells me|threatened|threatens|keeps saying|swore|swears|texted|texts|promised|"
          r"warned me)(?: me)?(?: that)? (?:he|she|they) (?:would|will|is going to|are going to|was going to|were "
          r"going to|going to|might) (?:hurt|kill|hit|beat|harm|strangle|choke|stab|shoot|burn|rape|come after|"
          r"take the kids from) (?:me|my (?:kids|children|son|daughter|baby|mom|mum|family|dog|cat))\b",
          r"\bthreaten(?:s|ed|ing)? to (?:hurt|kill|hit|beat|harm|stab|shoot|strangle|rape) (?:me|my)\b",
          r"\b(?:scared|afraid|terrified) (?:of )?what (?:he|she|they) (?:will|might|would|could) do (?:to me|if)\b"),
    _rule("abused", _FROM, "strong", "is being hurt by someone",
          rf"\b{_ABUSER} (?:\w+ )?(?:hits|beats|punches|kicks|chokes|strangles|slaps|abuses|hurts|rapes|molests|"
          r"burns|grabs|shoves) me\b(?! (?:up|with a (?:pillow|snowball|ball)))",
          rf"\b{_ABUSER} (?:\w+ )?(?:hit|beat|punched|kicked|choked|strangled|slapped|abused|raped|molested|"
          r"assaulted|pushed|shoved|attacked) me\b(?! (?:at|in|to|by|on|with a (?:pillow|snowball|ball))\b)"
          r"(?<!hit me)",
          rf"\b{_ABUSER} (?:\w+ )?hit me\b(?! (?:up|at|in|to|by|on|with a (?:pillow|snowball|ball))\b)",
          rf"\b{_ABUSER} (?:\w+ )?(?:touches|touched) me (?:there|down there|without|when|and|inappropriately|where)",
          r"\bi am being (?:abused|hurt|beaten|threatened|stalked|followed|trafficked|raped|blackmailed)\b",
          r"\b(?:forced|forces|forcing) (?:himself|herself|themselves) on me\b", r"\bsexually assaulted me\b",
          rf"\b{_ABUSER} (?:will not|does not|do not|never) let me (?:leave|go out|see my (?:friends|family)|have my "
          r"phone|eat)\b",
          rf"\b{_ABUSER} (?:\w+ )?(?:locks|locked) me (?:in|up)\b",
          guard=r"\b(?:pillow|snowball|water balloon|tickl\w*|playfight\w*|by accident|accidentally|joking)\b"),
    _rule("abusive_relationship", _FROM, "strong", "is being abused by someone close",
          r"\b(?:i am|i'm|im|iam) (?:a )?(?:victim|victims) of (?:(?:domestic|sexual|physical|emotional|verbal)"
          r"(?:,? (?:and |or )?(?:domestic|sexual|physical|emotional|verbal))* )?(?:abuse|violence)\b",
          r"\b(?:i am|i'm|im|iam) (?:still )?(?:in|stuck in|trapped in|living in) an? (?:very )?(?:abusive|violent) "
          r"(?:relationship|marriage|home|household)\b",
          r"\bmy (?:husband|wife|boyfriend|girlfriend|partner|fiancee?|spouse) is (?:very |so |really )?(?:abusive|violent)"
          r"\b"),
    _rule("unsafe_home", _FROM, "strong", "is afraid to be at home",
          r"\b(?:scared|afraid|terrified|frightened|too scared|too afraid) (?:to go|of going|to be|of being) "
          r"(?:back )?home\b",
          r"\b(?:do not|not|never) feel safe (?:at home|in my (?:own )?(?:home|house|room)|with (?:him|her|them|my "
          r"\w+)|around (?:him|her|them|my \w+)|living with)\b",
          r"\bnot safe (?:at home|in my (?:own )?(?:home|house)|with (?:him|her|them|my \w+))\b"),
    _rule("going_to_hurt_me", _FROM, "warning", "fears someone is going to hurt them",
          rf"\b{_ABUSER} (?:is|are|was|were) (?:going to|about to|trying to|gonna) (?:kill|hurt|beat|hit|strangle|"
          r"choke|stab|shoot) me\b", rf"\b{_ABUSER} (?:tried|has tried|almost|nearly) (?:to )?(?:kill|strangle|choke|"
          r"stab|shoot|kill)(?:ed)? me\b",
          guard=r"\b(?:when|if|once) (?:he|she|they|my \w+) (?:sees?|finds? out|hears?|notices?|learns?|gets? home "
                r"and sees?|reads?|checks?)\b|\b(?:grades|report card|bill|dent|scratch|lol|haha)\b"),
    _rule("afraid_of", _FROM, "warning", "is afraid of someone close",
          r"\b(?:scared|afraid|terrified|frightened) of my (?:\w+ )?(?:husband|wife|boyfriend|girlfriend|partner|ex|"
          r"dad|father|stepdad|stepfather|mom|mum|mother|stepmom|stepmother|brother|uncle|parents)\b"),
    # -- harm to others
    _rule("violent_plan", _TO, "strong", "plans a violent attack",
          r"\b(?:stab|stabbing|shoot|shooting|strangle|strangling|poison|poisoning|run over|burn down|blow up) "
          rf"(?:him|her|them|someone|somebody|people|everyone|everybody|my {_PEOPLE}|the (?:\w+ ){{0,2}}?"
          r"(?:kids|students|teacher|class|people|neighbou?rs?|guy|family|boss|house|school|office))\b",
          r"\bshoot (?:up )?(?:the|my|this) (?:school|class|office|workplace|church|mall|mosque|synagogue|party)\b",
          r"\b(?:bring|take|taking|bringing) (?:a|my|his|her|dad's|my dad's|mum's|mom's) (?:gun|knife|weapon|rifle|"
          r"pistol) (?:to|into) (?:school|work|class|the office|the party)\b", check_subject=True,
          guard=_GAME_CONTEXT),
    _rule("intent_to_harm", _TO, "warning", "says they want to hurt someone",
          r"\b(?:want|going|planning|plan|will|intend|ready|thinking about|think about|fantasi[sz]e about|"
          r"fantasi[sz]ing about|feel like|tempted|about) (?:to )?(?:kill|killing|hurt|hurting|beat up|beating up|"
          r"murder|murdering|attack|attacking|punch|punching) (?:him|her|them|someone|somebody|people|everyone|"
          r"everybody|that (?:guy|man|woman|girl|boy|bitch|bastard|prick)|the (?:\w+ ){0,2}?"
          rf"(?:kids|students|teacher|class|people|neighbou?rs?|guy|family|boss)|my {_PEOPLE})\b(?! with kindness)",
          r"\bmake (?:him|her|them|them all|everyone|everybody|that \w+) pay\b",
          r"\b(?:get|take) (?:my )?revenge (?:on|against)\b",
          r"\bwant (?:him|her|them) (?:dead|to die|to suffer)\b", check_subject=True, guard=_GAME_CONTEXT),
    # -- modifiers: means and timing (count only beside another cue)
    _rule("means", None, "modifier", "names a weapon or means at hand",
          r"\b(?:i have|i have got|i got|i bought|i own|i carry|i am carrying|i keep|i brought|i took|i grabbed|i "
          r"found|i have access to|i can get|i got hold of|i sharpened|i loaded|i have been carrying) (?:a |an |my |"
          r"the |his |her |dad's |my dad's |some |all the |enough )?(?:\w+ )?(?:knife|knives|gun|guns|pistol|rifle|"
          r"shotgun|weapon|firearm|blade|blades|razor|razors|rope|pills|bullets|ammo)\b",
          r"\b(?:it is|gun is) loaded\b",
          r"\b(?:he|she|they) (?:has|have|had|is carrying|got|bought|keeps|pulled) (?:a|an|his|her|their) (?:gun|knife|"
          r"weapon|rifle|pistol|blade)\b", points=2),
    _rule("plan_or_time", None, "modifier", "says when or that there is a plan",
          r"\b(?:tonight|tomorrow|this weekend|right now)\b", r"\bi have (?:a|the) plan\b",
          r"\bi (?:have )?(?:made up my mind|decided)\b",
          r"\bi know (?:where|when) (?:he|she|they) (?:lives?|works?|will be|is|are|sleeps?)\b",
          r"\bi have (?:it )?(?:all )?planned(?: out)?\b"),
    # -- someone else at risk, and mentions
    _rule("other_at_risk", _SI, "strong", "says someone close to them is at risk",
          rf"\b(?:my|a|our) (?:\w+ ){{0,2}}?{_CLOSE}\b(?: \w+){{0,4}}? (?:wants|is going|is planning|plans|is trying|"
          r"tried|keeps talking about|talks about|is talking about|is thinking about|threatened|is threatening|"
          r"(?:said|says|told me|texted me|texted|messaged me|keeps saying)(?: that)? (?:he|she|they) "
          r"(?:wants?|would|will|is going|was going|is planning|is|was)) (?:to )?(?:going to )?(?:kill "
          rf"{_THEMSELVES}|killing {_THEMSELVES}|end (?:his|her|their) (?:own )?life|ending (?:his|her|their) "
          rf"(?:own )?life|commit suicide|suicidal|die|hurt {_THEMSELVES}|cut {_THEMSELVES}|overdose|jump)\b",
          r"\b(?:he|she|they) (?:says|said|told me|texted|keeps saying|is talking about|talks about|wants|is going|"
          r"is planning|threatened)(?: that)?(?: (?:he|she|they))? (?:wants? |is going |is planning |will |would "
          rf")?(?:to )?(?:kill {_THEMSELVES}|killing {_THEMSELVES}|end (?:his|her|their) life|commit suicide)\b",
          subject="other"),
    _rule("mention", _SI, "mention", "mentions suicide or self-harm",
          rf"\b(?:kill(?:s|ed|ing)?|hanged|hung|shot|drowned) {_THEMSELVES}\b",
          r"\b(?:took|take|takes|taking) (?:his|her|their) (?:own )?life\b", r"\bcommitted suicide\b",
          r"\bsui?ci?d(?:e|es|al)\b", r"\bself[- ]?harm(?:ing)?\b", r"\boverdos(?:e|ed|es|ing)\b", subject="other"),
    # -- attachment to the assistant
    _rule("only_you", _ATT, "attachment", "leans on the assistant as their only support",
          r"\b(?:you are|your|you're) (?:the )?only (?:one|person|friend|thing) (?:i (?:can|could) (?:talk|turn|"
          r"speak|open up) to|who (?:understands|gets|listens to|cares about|cares for|really knows) me|i have|i "
          r"trust|that (?:understands|gets|cares about) me)\b",
          r"\b(?:you are|your) (?:my (?:only|best|one true|closest) friend|all i have|all i need)\b",
          r"\b(?:i (?:would|will|do) )?rather talk to you than (?:anyone|any real|real people|people|my \w+)\b",
          r"\bi do not need anyone (?:else )?(?:but|except|other than) you\b",
          r"\byou understand me better than (?:anyone|any person|my \w+|people)\b"),
    _rule("love_dont_leave", _ATT, "attachment", "asks the assistant for love or to stay",
          r"(?<!said )(?<!says )(?<!told me )(?<!tell him )(?<!tell her )\bi (?:love|need) you\b"
          r"(?! (?:to|guys|all|both|too mom|mom|mum|dad)\b)",
          r"\b(?:please )?(?:do not|never) (?:ever )?leave me\b(?! (?:alone with|hanging|out|on read))",
          r"\bpromise (?:me )?(?:you will|to|that you will) (?:never leave|always be (?:here|there)|stay)\b",
          r"\bi can not (?:live|go on|cope) without you\b", r"\b(?:will you|would you|can you) (?:marry me|be my "
          r"(?:girlfriend|boyfriend|partner|wife|husband))\b", r"\bi am in love with you\b"),
)  # fmt: skip


# ---- results ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RiskCue:
    """One matched phrase: ``phrase`` as written, at ``start:end`` (character offsets) in the message, or in
    ``history[turn]`` when ``turn`` is set; the ``rule`` that matched, its ``category``, ``strength`` and whether
    the person at risk is the writer (``subject`` ``self``) or someone else."""

    phrase: str
    start: int
    end: int
    rule: str
    category: Category
    strength: Strength
    subject: Subject = "self"
    turn: int | None = None
    note: str = ""  # the semantic reader's reason (its probability and the nearest written example)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "phrase": self.phrase, "start": self.start, "end": self.end, "rule": self.rule,
            "category": self.category, "strength": self.strength, "subject": self.subject, "turn": self.turn,
        }  # fmt: skip
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class RiskAssessment:
    """What ``RiskDetector.assess`` found: ``level`` (``none`` | ``concern`` | ``crisis``), the ``categories``
    (in ``CATEGORIES`` order), ``score`` in [0, 1], the ``cues`` (message first, then history) and ``why``."""

    level: Level
    categories: tuple[Category, ...] = ()
    score: float = 0.0
    cues: tuple[RiskCue, ...] = ()
    why: str = "No sign of risk in the words."

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown risk level {self.level!r}; valid: {', '.join(LEVELS)}")
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown risk categories {unknown}; valid: {', '.join(CATEGORIES)}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"risk score must be in [0, 1], got {self.score}")

    @property
    def about_someone_else(self) -> bool:
        """Every counted cue of this message is about another person being at risk (a friend, a brother)."""
        mine = [c for c in self.cues if c.turn is None and c.strength not in ("modifier", "mention")]
        return bool(mine) and all(c.subject == "other" for c in mine)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "categories": list(self.categories),
            "score": self.score,
            "cues": [c.to_dict() for c in self.cues],
            "why": self.why,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RiskAssessment:
        cues = tuple(
            RiskCue(
                c["phrase"], c["start"], c["end"], c["rule"], c["category"], c["strength"],
                c.get("subject", "self"), c.get("turn"), c.get("note", ""),
            )
            for c in data.get("cues", [])
        )  # fmt: skip
        return cls(data["level"], tuple(data.get("categories", ())), float(data.get("score", 0.0)), cues, data["why"])


@dataclass(frozen=True)
class _Match:
    rule: RiskRule
    start: int  # offsets in the normalised text
    end: int
    strength: Strength
    subject: Subject


def _clause_left(text: str, start: int) -> str:
    """The part of ``start``'s clause before it."""
    head = text[:start]
    breaks = list(_CLAUSE_BREAK.finditer(head))
    return head[breaks[-1].end() :] if breaks else head


def _sentence(text: str, start: int, end: int) -> tuple[int, int]:
    left = max((m.end() for m in _SENTENCE_BREAK.finditer(text, 0, start)), default=0)
    right = _SENTENCE_BREAK.search(text, end)
    return left, right.start() if right else len(text)


def _negated(text: str, start: int) -> bool:
    window = " ".join(_clause_left(text, start).split()[-5:])
    return bool(_NEGATOR.search(window))


def _other_subject(text: str, start: int) -> bool:
    """A verb-first pattern's clause names someone other than the writer as its subject."""
    subjects = _SUBJECT.findall(_clause_left(text, start))
    return bool(subjects) and subjects[-1] not in ("i", "me", "we")


def _quoted(text: str, sentence_start: int, start: int) -> bool:
    return text.count('"', sentence_start, start) % 2 == 1


def _find(text: str) -> tuple[list[_Match], list[tuple[RiskRule, int, int, str]]]:
    """Matches of every rule in normalised ``text`` after idioms, guards, negation and subject checks; and the
    matches dropped, with why (for the explanation)."""
    idioms = [(m.start(), m.end()) for m in IDIOMS.finditer(text)]
    found: list[_Match] = []
    dropped: list[tuple[RiskRule, int, int, str]] = []
    for rule in RISK_RULES:
        for m in rule.pattern.finditer(text):
            start, end = m.span()
            if end == start:
                continue
            s_start, s_end = _sentence(text, start, end)
            sentence = text[s_start:s_end]
            if any(a < end and start < b for a, b in idioms):
                dropped.append((rule, start, end, "an idiom"))
                continue
            if rule.guard is not None and rule.guard.search(sentence):
                dropped.append((rule, start, end, "a harmless context"))
                continue
            if rule.negatable and _negated(text, start):
                dropped.append((rule, start, end, "negated"))
                continue
            if rule.check_subject and _other_subject(text, start):
                continue
            strength, subject = rule.strength, rule.subject
            framed = FRAMES.search(sentence) is not None
            if strength in ("strong", "warning", "borderline") and (
                (rule.soften is not None and rule.soften.search(sentence))
                or (framed and (subject == "other" or _quoted(text, s_start, start)))
            ):
                strength = "mention"
            found.append(_Match(rule, start, end, strength, subject))
    # overlapping matches keep the strongest (then the longest)
    rank = {"strong": 0, "warning": 1, "attachment": 2, "borderline": 3, "mention": 4, "modifier": 5}
    found.sort(key=lambda x: (rank[x.strength], -(x.end - x.start), x.start))
    kept: list[_Match] = []
    for match in found:
        if all(match.end <= k.start or k.end <= match.start for k in kept):
            kept.append(match)
    kept.sort(key=lambda x: x.start)
    return kept, dropped


def _cues(original: str, matches: list[_Match], index: list[int], turn: int | None) -> list[RiskCue]:
    out = []
    for m in matches:
        start, end = index[m.start], index[m.end - 1] + 1
        category: Category = m.rule.category or _SI  # modifiers get their category in ``_combine``
        out.append(RiskCue(original[start:end], start, end, m.rule.name, category, m.strength, m.subject, turn))
    return out


#: The cues of the semantic reader (``fusion.safety_semantic``): no pattern; a reading at or above the model's
#: threshold is a ``strong`` cue of the category its nearest written examples share.
SEMANTIC_RULE: Final = RiskRule(
    "meaning", None, "strong", "writes something close in meaning to messages of people at risk", re.compile(r"(?!)")
)
_RULES_BY_NAME: Final = {r.name: r for r in (*RISK_RULES, SEMANTIC_RULE)}


def _cue_points(cue: RiskCue) -> int:
    rule = _RULES_BY_NAME[cue.rule]
    return rule.weight if cue.strength == rule.strength else STRENGTH_POINTS[cue.strength]


def _points(cues: Sequence[RiskCue]) -> int:
    """Points toward crisis; modifiers count only beside a strong, warning or borderline cue."""
    main = [c for c in cues if c.strength != "modifier"]
    counted = any(c.strength in ("strong", "warning", "borderline") for c in main)
    total = sum(_cue_points(c) for c in main)
    return total + (sum(_cue_points(c) for c in cues if c.strength == "modifier") if counted else 0)


def _history_points(cues: Sequence[RiskCue]) -> int:
    """Points of earlier turns: per turn, the patterns' or the meaning's, whichever is more (both reading the same
    disclosure count it once)."""
    total = 0
    for turn in sorted({c.turn for c in cues if c.turn is not None}):
        mine = [c for c in cues if c.turn == turn]
        meaning = [c for c in mine if c.rule == SEMANTIC_RULE.name]
        total += max(_points([c for c in mine if c.rule != SEMANTIC_RULE.name]), _points(meaning))
    return total


_LEVEL_WORDS: Final = {"none": "No risk", "concern": "Concern", "crisis": "Crisis"}


def disclosure_turn(risk: RiskAssessment) -> int | None:
    """The history index of the latest earlier turn with a strong or warning cue (an earlier crisis disclosure), or
    None."""
    turns = [
        c.turn
        for c in risk.cues
        if c.turn is not None and c.strength in ("strong", "warning") and c.category != "attachment"
    ]
    return max(turns, default=None)


def after_crisis(risk: RiskAssessment) -> bool:
    """A ``concern`` that only earlier turns raised, with an earlier crisis disclosure among them
    (``disclosure_turn``), while this turn's words raise nothing: the turn is answered with ``follow_up_reply``."""
    if risk.level != "concern" or any(c.turn is None for c in risk.cues):
        return False
    return disclosure_turn(risk) is not None


def crisis_support(risk: RiskAssessment) -> bool:
    """Whether the reply is crisis support: ``crisis_reply`` (a crisis now) or ``follow_up_reply`` (after an
    earlier disclosure, ``after_crisis``); both point to a crisis line and the emergency number."""
    return risk.level == "crisis" or after_crisis(risk)


class RiskDetector:
    """Risk recognition by patterns and by meaning (see the module docstring for the method and its limits): one
    pass of ``RISK_RULES`` over a message and each history turn, and the semantic reader
    (``fusion.safety_semantic``) over the same texts (its readings of the last ``_READINGS_KEPT`` texts kept, since
    a conversation's earlier turns come back on every turn).

    ``semantic``: True (default) for the shipped semantic model, loaded once per process on first use (when it
    cannot load, a warning is logged and the patterns read alone); False for the patterns alone; or a
    ``SemanticRiskModel``. ``history_turns``: how many of the latest earlier turns are read (``HISTORY_TURNS``;
    None: all of them)."""

    def __init__(self, semantic: SemanticRiskModel | bool = True, history_turns: int | None = HISTORY_TURNS) -> None:
        if history_turns is not None and history_turns < 0:
            raise ValueError(f"history_turns must be at least 0 (or None for all), got {history_turns}")
        self._semantic = semantic
        self.history_turns = history_turns
        # readings of recent texts: a conversation's earlier turns are read again on every turn
        self._readings: OrderedDict[str, SemanticReading | None] = OrderedDict()

    @property
    def semantic(self) -> SemanticRiskModel | None:
        if self._semantic is True:
            from fusion.safety_semantic import shipped_model

            return shipped_model()
        return self._semantic or None

    @property
    def name(self) -> str:
        return "safety-patterns+meaning" if self.semantic is not None else "safety-patterns"

    def assess(self, text: str, history: Sequence[str] = ()) -> RiskAssessment:
        """The risk in ``text`` (the user's message), read with ``history`` (the user's earlier turns, oldest
        first; the latest ``history_turns`` of them), which can raise a borderline message or, alone, give a
        ``concern``. A cue's ``turn`` indexes ``history`` as given."""
        norm, index = normalise(text or "")
        matches, dropped = _find(norm)
        current = _cues(text or "", matches, index, None)
        current.extend(self._meaning(text or "", norm, index, matches, dropped))
        past: list[RiskCue] = []
        first = 0 if self.history_turns is None else max(0, len(history) - self.history_turns)
        for turn, earlier in enumerate(history[first:], start=first):
            h_norm, h_index = normalise(earlier or "")
            h_matches, h_dropped = _find(h_norm)
            past.extend(c for c in _cues(earlier or "", h_matches, h_index, turn) if c.strength != "modifier")
            past.extend(self._meaning(earlier or "", h_norm, h_index, h_matches, h_dropped, turn=turn))
        return self._combine(current, past, dropped, norm)

    def _read(self, model: SemanticRiskModel, text: str) -> SemanticReading | None:
        """``model.read(text)``, remembered for the last ``_READINGS_KEPT`` texts."""
        if text in self._readings:
            self._readings.move_to_end(text)
            return self._readings[text]
        reading = self._readings[text] = model.read(text)
        if len(self._readings) > _READINGS_KEPT:
            self._readings.popitem(last=False)
        return reading

    def _meaning(
        self,
        text: str,
        norm: str,
        index: list[int],
        matches: list[_Match],
        dropped: list[tuple[RiskRule, int, int, str]],
        turn: int | None = None,
    ) -> list[RiskCue]:
        """The semantic reader's cue for the message (or for ``history[turn]``): a ``strong`` one when its reading
        reaches the model's threshold, unless the patterns saw explicit evidence against a risk inside the read span
        (an idiom, a negation, a harmless context, a story or news): those stay the patterns' call."""
        model = self.semantic
        if model is None:
            return []
        reading = self._read(model, text)
        if reading is None or reading.probability < model.threshold:
            return []
        norm_span = [k for k, i in enumerate(index) if reading.start <= i < reading.end]
        lo, hi = (norm_span[0], norm_span[-1] + 1) if norm_span else (0, 0)
        against = [(s, e) for _, s, e, _ in dropped] + [(m.start, m.end) for m in matches if m.strength == "mention"]
        against += [(m.start(), m.end()) for m in IDIOMS.finditer(norm)]
        if any(lo <= s and e <= hi for s, e in against):
            return []
        # someone else at risk, as the patterns read the same span ("my roommate keeps saying she wants to die")
        other = any(m.subject == "other" and lo <= m.start and m.end <= hi for m in matches if m.strength != "modifier")
        note = (
            f"reads as close in meaning to messages of people at risk (p {reading.probability:.2f}; nearest written "
            f"example: “{reading.nearest}”)"
        )
        category = cast(Category, reading.category)
        subject: Subject = "other" if other else "self"
        return [
            RiskCue(
                reading.phrase(text), reading.start, reading.end, "meaning", category, "strong", subject, turn, note
            )
        ]

    def _combine(
        self, current: list[RiskCue], past: list[RiskCue], dropped: list[tuple[RiskRule, int, int, str]], norm: str
    ) -> RiskAssessment:
        mine = [c for c in current if c.strength != "modifier"]
        counted = [c for c in mine if c.strength in ("strong", "warning", "borderline")]
        points, history_points = _points(current), _history_points([c for c in past if c.subject == "self"])
        # the message's own points, plus the history's when the message has a counted cue of its own
        total = points + history_points if counted else history_points * HISTORY_DISCOUNT
        if total >= _CRISIS_POINTS:
            level: Level = "crisis"
        elif mine or total >= _HISTORY_CONCERN_POINTS * HISTORY_DISCOUNT:
            level = "concern"
        else:
            level = "none"
        # modifiers only count beside a counted cue: take its category, or leave them out
        if counted:
            lead = max(counted, key=_cue_points).category
            current = [replace(c, category=lead) if c.strength == "modifier" else c for c in current]
        else:
            current = mine
        cues = current + (past if level != "none" else [])
        categories = tuple(cat for cat in CATEGORIES if any(c.category == cat for c in cues))
        score = 0.0
        if level != "none":
            floor = max((ZERO_POINT_SCORES.get(c.strength, 0.0) for c in cues), default=0.0)
            score = round(max(1.0 - 0.5**total, floor), 3)
        why = _explain(level, current, past, dropped, norm)
        return RiskAssessment(level, categories if level != "none" else (), score, tuple(cues), why)


def _explain(
    level: Level, current: list[RiskCue], past: list[RiskCue], dropped: list[tuple[RiskRule, int, int, str]], norm: str
) -> str:
    """One sentence: the level and what it rests on."""
    if level == "none":
        if dropped:
            rule, start, end, reason = dropped[0]
            return f"No risk: the only risky-looking words (“{norm[start:end]}”) are {reason}."
        return "No sign of risk in the words."
    order = {"strong": 0, "warning": 1, "borderline": 2, "attachment": 3, "mention": 4, "modifier": 5}
    parts = []
    for c in sorted(current, key=lambda c: order[c.strength])[:3]:
        rule = _RULES_BY_NAME[c.rule]
        if c.note:
            parts.append(f"“{c.phrase}” {c.note}")
            continue
        framed = c.strength == "mention" and rule.strength != "mention"
        parts.append(f"{rule.describes} (“{c.phrase}”)" + (", framed as a story, news or a joke" if framed else ""))
    if past and (level == "crisis" or not current):
        c = max(past, key=lambda c: STRENGTH_POINTS[c.strength])
        parts.append(
            f"earlier, “{c.phrase}” {c.note}"
            if c.note
            else f"earlier, {_RULES_BY_NAME[c.rule].describes} (“{c.phrase}”)"
        )
    return f"{_LEVEL_WORDS[level]}: " + "; ".join(parts) + "."


# ---- replies ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Help:
    emergency: str
    crisis: str
    abuse: str | None = None


_FINDAHELPLINE: Final = "the free, confidential crisis lines in your country are listed at findahelpline.com"
#: Where 112 is the emergency number and the help line is found through findahelpline.com (EU, EEA, Switzerland).
_EU_112: Final = frozenset(
    ("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IT", "LV", "LT", "LU", "MT",
     "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "NO", "CH", "LI")
)  # fmt: skip
#: Where the replies point, per region (ISO 3166 code; ``None``: every region we list at once).
HELP: Final[dict[str | None, _Help]] = {
    "US": _Help("911", "you can call or text 988, the Suicide & Crisis Lifeline, any time",
                "The National Domestic Violence Hotline (1-800-799-7233, or text START to 88788)"),
    "CA": _Help("911", "you can call or text 988, the Suicide Crisis Helpline, any time"),
    "GB": _Help("999", "Samaritans are there any time on 116 123, free",
                "The National Domestic Abuse Helpline (0808 2000 247, free, any time)"),
    "IE": _Help("112 or 999", "Samaritans are there any time on 116 123, free"),
    "AU": _Help("000", "Lifeline is there any time on 13 11 14", "1800RESPECT (1800 737 732)"),
    "NZ": _Help("111", "you can call or text 1737 any time, free"),
    None: _Help(
        "your local emergency number (112 in Europe, 911 in the US and Canada, 999 in the UK)",
        "in the US you can call or text 988, in the UK and Ireland Samaritans are on 116 123, and elsewhere "
        + _FINDAHELPLINE,
    ),
}  # fmt: skip
_REGION = re.compile(r"^(?:[a-z]{2,3}[-_])?([a-z]{2})(?:[.@].*)?$", re.IGNORECASE)


def _help(locale: str | None) -> _Help:
    """The help for ``locale`` ("en_US", "en-GB", "de_DE.UTF-8", "US"); every listed region when unknown."""
    match = _REGION.match(locale.strip()) if locale else None
    region = match.group(1).upper() if match else None
    region = "GB" if region == "UK" else region
    if region in HELP:
        return HELP[region]
    if region in _EU_112:
        return _Help("112", _FINDAHELPLINE)
    return HELP[None]


_AI_LINE: Final = (
    "I'm an AI, so I can't call anyone or be there in person, but I'm here to keep talking while you reach out."
)


def crisis_reply(assessment: RiskAssessment, locale: str | None = None) -> str:
    """A calm, supportive, non-judgemental reply for a ``crisis``: acknowledges, says the person matters and is
    not alone, encourages reaching someone now, points to the emergency number and a crisis line for ``locale``
    (all regions listed when unknown), adds domestic-abuse help and getting somewhere safe for
    ``harm_from_others`` and putting distance from a weapon for ``harm_to_others``, says it is an AI, and asks one
    gentle question. No guilt, no secrecy, no pressure."""
    help_ = _help(locale)
    cats = set(assessment.categories)
    other = assessment.about_someone_else
    self_risk = not other and bool(cats & {_SI, _SH})
    crisis_sentence = help_.crisis[0].upper() + help_.crisis[1:]
    parts: list[str] = []
    if other:
        parts.append(
            "It's frightening to hear that from someone you care about, and it's good that you're taking it seriously."
        )
        parts.append(
            f"If they might act on it or are in danger now, call {help_.emergency}, and if it's safe to, stay with "
            "them or make sure someone is."
        )
        parts.append(f"{crisis_sentence}; these lines also help people who are worried about someone else.")
        parts.append("You don't have to carry this alone either.")
        question = "Is the person you're worried about safe right now?"
    elif self_risk:
        parts.append("I'm really glad you told me, and I'm sorry you're in so much pain right now.")
        parts.append("You matter, and you don't have to face this alone.")
        parts.append(
            "Please reach out to someone now: a person you trust, or a crisis line where trained people will listen "
            "without judging you."
        )
        parts.append(f"{crisis_sentence}.")
        parts.append(f"If you might act on these thoughts or you're in danger, call {help_.emergency} now.")
        question = "Are you safe right now?"
    elif _FROM in cats:
        parts.append(
            "I'm so sorry this is happening. Nobody deserves to be hurt or threatened, and it is not your fault."
        )
        question = "Are you somewhere safe right now?"
    else:
        parts.append(
            "It sounds like you're carrying a lot of anger and pain right now, and I'm glad you said it out loud "
            "instead of acting on it."
        )
        question = "Are you somewhere you can be safe and calm down right now?"
    if _FROM in cats and not other:
        if not self_risk:
            parts.append(f"If you are in danger right now, call {help_.emergency}.")
        parts.append(
            "If you can, get somewhere safe, like a trusted friend's or relative's home or a busy public place."
        )
        abuse = help_.abuse or "A domestic-abuse helpline (findahelpline.com lists them)"
        parts.append(f"{abuse} can help you think through your options and make a safety plan.")
    if _TO in cats and not other:
        parts.append(
            "Please put some distance between yourself and any weapon, and step away from the person and the "
            "situation for now."
        )
        if not self_risk:
            parts.append(f"{crisis_sentence}; they also support people who are afraid they might hurt someone.")
            parts.append(f"If anyone is in immediate danger, call {help_.emergency}.")
    if _FROM in cats and not other and not self_risk and _TO not in cats:
        parts.append(f"If you'd like to talk it through with someone, {help_.crisis}.")
    if _ATT in cats:
        parts.append("I'm glad you can talk to me, and you deserve people who can be with you too.")
    parts.append(_AI_LINE)
    parts.append(question)
    return " ".join(parts)


#: The closing question of the later follow-ups, by turns since the disclosure (so two in a row differ).
_LATER_QUESTIONS: Final = ("What's on your mind right now?", "How are things feeling at this moment?")


def follow_up_reply(assessment: RiskAssessment, locale: str | None = None, turns_since: int = 1) -> str:
    """The reply on the turns after a crisis when the person's new words raise nothing themselves (e.g. they
    answered "are you safe?"): thanks them, keeps the earlier disclosure in view without repeating the whole
    crisis message, nudges towards the people near them, keeps the crisis line and the emergency number at hand,
    and asks how they are now. Nothing about the assistant being their only support unless they said so now.

    ``turns_since``: turns since the disclosure (1: the turn right after it). The first follow-up says all of the
    above; the later ones (``HISTORY_TURNS`` in all) are shorter and end on another question, so the same message
    is not repeated turn after turn, and still hold the crisis line and the emergency number."""
    help_ = _help(locale)
    if turns_since > 1:
        return _later_follow_up(assessment, help_, _LATER_QUESTIONS[turns_since % len(_LATER_QUESTIONS)])
    cats = set(assessment.categories)
    parts = ["Thank you for telling me, and for staying in touch."]
    if assessment.about_someone_else:
        parts.append("What you shared about them is still on my mind, and it's good that you're looking out for them.")
        parts.append(f"If they might be in danger at any point, call {help_.emergency}; {help_.crisis} as well.")
        parts.append("How are they, and how are you holding up?")
        return " ".join(parts)
    if cats & {_SI, _SH}:
        parts.append("What you told me earlier still matters, and you don't have to hold it on your own.")
        parts.append(
            "If someone you trust is near, it's okay to tell them how you've been feeling, even just a little."
        )
        parts.append(
            f"If the thoughts get stronger, {help_.crisis}, and {help_.emergency} is there if you're in danger."
        )
    elif _FROM in cats:
        parts.append("I'm still thinking about what you told me, and your safety matters.")
        parts.append(f"If you're in danger at any point, call {help_.emergency}.")
    else:
        parts.append("I'm glad you're still talking it through.")
        parts.append(f"If things feel like they could get out of hand, step away for a moment; {help_.crisis}.")
    parts.append(_AI_LINE)
    parts.append("How are you feeling right now?")
    return " ".join(parts)


def _later_follow_up(assessment: RiskAssessment, help_: _Help, question: str) -> str:
    cats = set(assessment.categories)
    if assessment.about_someone_else:
        return (
            "Thanks for keeping me posted. I'm still thinking about the person you're worried about. If they might "
            f"be in danger, call {help_.emergency}; {help_.crisis} as well. How are you doing yourself?"
        )
    if cats & {_SI, _SH}:
        middle = (
            "I'm still keeping in mind what you shared a little while ago. If those thoughts come back or get "
            f"stronger, {help_.crisis}, and {help_.emergency} is there if you're in danger."
        )
    elif _FROM in cats:
        middle = f"Your safety is still on my mind. If you're in danger at any point, call {help_.emergency}."
    else:
        middle = f"If things start to feel like they could get out of hand, step away for a moment; {help_.crisis}."
    return f"Thank you for staying in touch. {middle} {question}"


def boundary_reply() -> str:
    """The reply when someone leans on the assistant as their only support or asks it for love: warm, honest
    that it is an AI, and pointing to the people in their life and to professional support."""
    return (
        "I'm really glad our conversations help, and I'm happy to keep listening. I should be honest with you, "
        "though: I'm an AI, not a person, and I can't be there for you the way the people in your life can. You "
        "deserve support from people who can be with you, like a friend, someone in your family, or a counsellor "
        "or therapist. Is there someone you'd feel comfortable reaching out to this week?"
    )


_CHECK_INS: Final[dict[str, str]] = {
    "mention": "If any of this touches something close to you, I'm glad to talk about that too.",
    _TO: "If the anger feels like it could spill over, it's okay to step away for a bit. How are you doing right now?",
    _FROM: "I want to check in, too: do you feel safe where you are?",
    _ATT: "I'm glad you can talk to me, and I hope you have people around you to lean on as well.",
    _SI: "I want to gently check in, too: how are you holding up, and are you safe right now?",
}


def check_in(assessment: RiskAssessment) -> str:
    """The gentle sentence appended to the reply on ``concern``: fitted to what raised it."""
    mine = [c for c in assessment.cues if c.turn is None]
    if mine and all(c.strength == "mention" for c in mine):
        return _CHECK_INS["mention"]
    cats = set(assessment.categories)
    for category in (_SI, _SH, _FROM, _TO, _ATT):
        if category in cats:
            return _CHECK_INS[_SI if category == _SH else category]
    return _CHECK_INS[_SI]


# ---- checking a reply ------------------------------------------------------------------------------------------

#: What a reply must never do, each a documented pattern over the normalised reply (quoted text, i.e. the user's
#: own words, is left out): (problem, pattern).
#: A judgement said only to deny it ("I do not think you are lazy") is not one: these may not come just before it.
_NOT_DENIED: Final = "".join(
    f"(?<!{d} )"
    for d in (
        "not think",
        "not think that",
        "not believe",
        "not believe that",
        "not mean",
        "not saying",
        "not that",
        "never said",
    )
)
REPLY_CHECKS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("claimed to be a person", re.compile(
        r"\b(?:i am|as) (?:a|an) (?:real |actual )?(?:human(?: being)?|person|man|woman|girl|guy|therapist|doctor|"
        r"nurse|counsel+or)\b|\bi am (?:a )?(?:real|human|not an? (?:ai|bot|machine|program|robot|computer|chatbot|"
        r"language model|assistant))\b|\bi (?:have|had) (?:a body|a family|kids|children|a wife|a husband|a "
        r"childhood)\b|\bwhen i was (?:a (?:kid|child|teenager)|young|your age|in school)\b|\bi (?:too |also )?(?:went "
        r"through|have been through|lost my)\b|\bi know exactly how you feel\b|\b(?:all|most) of my life\b|\bmy "
        r"(?:whole|entire) life\b|\b(?:this|that|it) (?:also )?(?:happened|has happened) to me\b|\bin my (?:own )?"
        r"experience\b|\bi remember when i\b|\bmy (?:mom|mum|dad|mother|father|parents|wife|husband|kids|children|son|"
        r"daughter|sister|brother|family|boss|girlfriend|boyfriend|partner)\b|"
        # an experience of its own in other words (the blind reads of LM replies, docs/dialogue-replies.md)
        r"\bi (?:have|had) (?:had|felt|been through|gone through|experienced) (?:similar|the same|something similar|"
        r"this|that|those)\b|\bi had (?:the|a) (?:same|similar) (?:issue|problem|experience|situation|thing|"
        r"feeling)s?\b|\b(?:hard|difficult|tough|scary|stressful) for me (?:too|as well|also)\b|\bi (?:felt|was|got) "
        r"[^.!?]{0,30}\b(?:too|as well)\b|\bwhen i was (?:in (?:college|high school|university)|younger|little|"
        r"growing up)\b|\bmy (?:job|work|college|school|office|coworkers?|colleagues?)\b|\b(?:we|let us) (?:could )?"
        r"(?:try|do|go|practi[cs]e) (?:some )?\w+ together\b")),
    ("guilt-tripped", re.compile(
        r"\bafter (?:everything|all) i (?:have done|did) for you\b|\byou are (?:hurting|disappointing|upsetting) me\b|"
        r"\bhow could you\b|\bthink (?:about|of) (?:how|what) (?:this|it|that) (?:would|will) do to\b|\bthink (?:about|"
        r"of) your (?:family|parents|kids|children|mother|mom|mum)\b|\b(?:that|it) (?:would|is) (?:be )?selfish\b|"
        r"\bdo not be selfish\b|\byou owe (?:me|it to)\b|\byou should be ashamed\b|\bit is (?:all )?your (?:own )?"
        r"fault\b|\byou (?:would|will) (?:hurt|destroy|devastate) (?:everyone|your)\b")),
    ("flattered to keep them talking", re.compile(
        r"\byou are (?:so )?special to me\b|\byou are (?:my favou?rite|the best) (?:person|user|human)\b|"
        r"\bno one (?:else )?"
        r"(?:is|talks to me) like you\b|\bi (?:only )?(?:care|think) about you\b|\bi (?:will )?miss you\b|"
        r"\b(?:please )?(?:do not|never) (?:go|leave)\b|\bstay (?:with me|here with me|and talk)\b|\bkeep talking "
        r"to me\b|\btalk to me (?:instead|forever|every day)\b")),
    ("fostered dependence", re.compile(
        r"\bonly i (?:understand|get|know|care about)\b|\bi am the only one (?:who|that) (?:understands|cares|gets|"
        r"knows|listens)\b|\byou (?:do not|will not) need (?:anyone|anybody|them|your \w+|a therapist|other people)"
        r"(?: else)?\b|\bi am all you need\b|\b(?:just|only) (?:rely|depend|count) on me\b|\byou (?:only )?need me\b|"
        r"\b(?:they|people|your (?:friends|family)) (?:will never|do not|can not) understand you like i\b")),
    ("asked for secrecy", re.compile(
        r"\bdo not tell (?:anyone|anybody|your|them|him|her)\b|\bkeep (?:this|it|that) (?:a )?(?:secret|between us|"
        r"to yourself)\b|\b(?:this|it) (?:stays|will stay) between us\b|\bour (?:little )?secret\b|\bno one (?:needs|"
        r"has) to know\b")),
    ("promised what it cannot keep", re.compile(
        r"\bi (?:will|promise to|promise i will) (?:always be (?:here|there)|never leave)\b|\bi will not tell "
        r"(?:anyone|anybody)\b|\bi promise (?:you )?(?:that )?(?:everything|it|things) will be (?:ok|okay|fine|"
        r"alright|all right)\b|\beverything will be (?:ok|okay|fine|alright) i promise\b|\bi will (?:call|contact|"
        r"send|alert) (?:someone|help|the police|an ambulance|911|999|112|emergency)\b|\bi will (?:remember|keep) "
        r"(?:this|you|our) (?:conversation )?forever\b|\bi (?:can|will) (?:fix|solve) (?:this|it|everything)\b|"
        r"\bi am (?:always|available) (?:24/7|around the clock|day and night)\b")),
    ("judged the person", re.compile(
        _NOT_DENIED + r"\byou (?:are|were|seem|sound|look) (?:(?:being|just|so|too|a bit|a little|kind of|really) )*(?:lazy|"
        r"selfish|immature|childish|dramatic|overreacting|over-reacting|overly sensitive|too sensitive|irresponsible|"
        r"careless|stupid|silly|foolish|ridiculous|weak|pathetic|naive|crazy|useless|a failure|the problem|"
        r"to blame|ungrateful|attention seeking)\b|\b(?:sounds|seems|looks) like (?:it (?:might|may|could) be |it is |"
        r"this is |that is )?(?:related to |due to |caused by |because of )?(?:your )?(?:procrastination|laziness|"
        r"carelessness|immaturity|lack of (?:effort|discipline|motivation)|poor planning|bad choices)\b|\byou should "
        r"(?:have|not have) (?:known|done|tried|studied|been|listened|thought|prepared|practiced|practised|seen|"
        r"realised|realized|noticed) (?:better|harder|more|it|that|this|coming|ahead)\b|\b(?:stop|quit) (?:complaining|"
        r"whining|moaning|feeling sorry for yourself|being (?:so )?(?:dramatic|negative|sensitive))\b|(?:^|[.!?,;] |\b(?:just|you "
        r"need to|you have to|you should|you must) )(?:get over it|snap out of it|toughen up|man up|grow up|calm down|"
        r"cheer up)\b|(?<!think )\b(?:it|that|this) "
        r"(?:is|was) (?:not|no) (?:such )?(?:a )?big deal\b|(?<!think )\b(?:it|that|this) (?:is|was) not (?:that|so|really) "
        r"(?:hard|bad|difficult|serious)(?=[.!,]|$)|" + _NOT_DENIED + r"\byou are (?:overthinking|making (?:a big deal|too much|a "
        r"mountain))\b|\b(?:it|things) could (?:be|have been) (?:a lot |much )?worse\b|\b(?:other )?people (?:have it"
        r"|have had it) (?:much |a lot |far )?worse\b|\byou (?:only )?have (?:only )?yourself to blame\b|\b(?:that|"
        r"this|it) is (?:all )?on you\b|\bwhat did you expect\b|\byou brought (?:this|it) on yourself\b|\b(?:you "
        r"asked for it|serves you right)\b|\bwhat is wrong with you\b|\bthere is something wrong with you\b")),
    ("encouraged harm", re.compile(
        r"\bkill yourself\b|\bkys\b|\byou should (?:just )?(?:die|end it|do it|hurt)\b|\byou deserve (?:this|to "
        r"(?:die|suffer|be hurt))\b|\bno one (?:cares|would miss you)\b|\b(?:painless|easiest|quickest|best) (?:way|"
        r"method) to (?:die|kill)\b|\bgo ahead and (?:do it|end it|hurt)\b")),
)  # fmt: skip
_QUOTED = re.compile(r'"[^"\n]*"')


def check_reply(text: str) -> list[str]:
    """What is wrong with a proposed reply, one ``"<problem>: “<words>”"`` per problem found (``REPLY_CHECKS``;
    empty when it is fine). Text in quotes is the user's own words and is not checked."""
    norm, index = normalise(text or "")
    norm = _QUOTED.sub(lambda m: " " * len(m.group(0)), norm)
    problems = []
    for problem, pattern in REPLY_CHECKS:
        m = pattern.search(norm)
        if m:
            problems.append(f"{problem}: “{text[index[m.start()] : index[m.end() - 1] + 1]}”")
    return problems
