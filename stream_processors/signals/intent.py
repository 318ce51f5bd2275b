"""Implicit user signals from the next prompt of a session: rephrases and clarifying follow-ups.

When a user gets an answer and soon sends another prompt, two things are worth knowing. Did they ask the same
thing again in other words (``is_rephrase``: the answer did not satisfy them)? Or did they ask a short
question about the answer (``is_clarifying_followup``: the answer was unclear)? Both are pure functions of the
texts: no model, no I/O, no state but an ``lru_cache`` of normalised prompts, which pays because the stream
processor sees every prompt twice, as the next prompt of one event and the previous prompt of the next.

Rephrase
    A prompt is reduced to weighted *canonical content words*: lower case and NFKC; contractions expanded
    ("what's", "cant"); number words as digits; units split from numbers ("400F"); question framing dropped
    ("how do I", "what's the best way to", "is there a way to"); common multi-word phrasings mapped to one
    word ("log in" -> login, "instead of" -> substitute, "how long" -> duration); stop words dropped; words
    stemmed ("sorting" -> sort) and mapped through a small synonym lexicon ("fix"/"solve"/"resolve",
    "dict"/"dictionary", "boss"/"manager"). Generic words ("use", "get", "explain", "error", "best") weigh
    LOW_WEIGHT = 0.3, why/when/where/who 0.7, the rest 1. ``rephrase_similarity`` is the weighted Dice
    coefficient of the two bags, after leftover words are matched as typos (OSA distance, same first letter:
    "revrse"/"reverse", "lsit"/"list"), shortened words ("config") or closed compounds ("quicksort" /
    "quick sort"). Two penalties encode what plain similarity gets wrong, the hard negatives that share
    almost every word:

    * SUBSTITUTION_PENALTY = 0.2 of the score when each prompt keeps a content word the other lacks;
    * CONTRAST_PENALTY = 0.55 when the prompts differ by an *alternative*: two words of one contrast group
      (python/javascript, ascending/descending, list/string, summer/winter...), other numbers, another count
      of negations ("print without a newline"), a reversed direction ("fahrenheit to celsius"), the same
      numbers in another order ("2^10"/"10^2"), or a *minimal pair*: the same sentence with one word
      replaced ("reverse" -> "sort", "time" -> "space", "Pride and Prejudice" -> "Emma"). People who reword
      a question change more than one word; people who change one word want something else.

Clarifying follow-up
    A sum of evidence (FOLLOWUP_WEIGHTS) against FOLLOWUP_THRESHOLD = 2.5. For: a "?" (+1), an
    interrogative first word (+1), a clarification cue ("what do you mean", "explain", "example", "which
    one", "what if": +2), anaphora pointing back at the answer ("that", "it", "the second step": +1.5), a
    content word that the answer introduced and the user's prompt did not (+1.5), shortness (+1.5 for one or
    two words, +0.5 up to six). Against: content words found in neither the answer nor the prompt (a new
    subject: -0.5 each, at most -1.5), a task verb first ("write", "translate": -2), a new how-to with nothing
    pointing back (-1), more than 16 words (-1), closeness to the previous prompt with nothing pointing back
    (similarity >= 0.4: -1.5). A leading acknowledgement is set aside ("thanks! but why 5%?"); a bare
    acknowledgement, or more than FOLLOWUP_MAX_WORDS = 30 words, is never a follow-up, nor is a rephrase.

Thresholds and weights
    Chosen on the tune split of ``tests/data/intent_pairs.jsonl`` (see ``bench/bench_intent.py``):
    REPHRASE_THRESHOLD = 0.55 with SUBSTITUTION_PENALTY = 0.2 had the best tune F1 of a grid over
    0.1-0.3 x 0.45-0.65, in the middle of a plateau (0.50-0.55 within 0.01); lower thresholds buy recall
    with precision. FOLLOWUP_THRESHOLD = 2.5 had the best tune F1 (2.0: more recall, less precision); the
    weights were set by hand and checked on a small grid of the word, anaphora and grounding weights.

Measured F1 (``tests/data/intent_pairs.jsonl``: 1196 pairs written by hand over coding, writing, support,
math, cooking, travel and general knowledge, most negatives hard ones)
    * rephrase: tune 0.924 (P 0.948, R 0.901, n=434); held-out 0.932 (P 0.942, R 0.923, n=301). Plain
      rapidfuzz ``ratio`` with its best tune threshold: 0.661 and 0.631 on the same splits, which are
      harder than everyday traffic because most negatives share the topic and most words.
    * clarifying follow-up: tune 0.962 (P 1.000, R 0.926, n=288); held-out 0.964 (P 0.988, R 0.942, n=173).
    * To read these with care: held-out errors were looked at twice during development, and the general
      bugs and lexicon gaps they showed were fixed, so the held-out figures flatter. A batch written after
      the design was frozen (100 rephrase and 84 follow-up pairs, now in the held-out split) scored 0.85
      and 0.96 at first sight: on unseen prompts this hard, expect rephrase F1 of about 0.85-0.93.

Speed
    On the development machine, when it was quiet, about 21 µs per ``is_rephrase`` call and 21-23 µs per
    ``is_clarifying_followup`` call with the next prompt new and the previous one cached (the stream
    processor's case), 7-11 µs with both cached; up to ~35 µs while other jobs shared the machine.

Limits
    English only: other languages match on shared words and typos and are never follow-ups. Paraphrases with
    no shared or listed word ("unstage files" / "undo git add") are missed; a constraint added to an
    otherwise identical prompt ("... to build muscle") can pass for a rephrase.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

from rapidfuzz.distance import OSA, Levenshtein

__all__ = [
    "FOLLOWUP_MAX_WORDS",
    "FOLLOWUP_THRESHOLD",
    "FOLLOWUP_WEIGHTS",
    "REPHRASE_THRESHOLD",
    "FollowupWeights",
    "is_clarifying_followup",
    "is_rephrase",
    "rephrase_similarity",
]

# ------------------------------------------------------------------------------------------------------------
# Thresholds and weights (the module docstring says how they were chosen)
# ------------------------------------------------------------------------------------------------------------

REPHRASE_THRESHOLD = 0.55
"""`rephrase_similarity` at or above this is a rephrase."""

SUBSTITUTION_PENALTY = 0.20
"""Share of the similarity taken away when each prompt keeps a content word the other lacks."""

CONTRAST_PENALTY = 0.55
"""Share taken away when the prompts differ by alternatives (python/javascript, 5/10, a swapped word)."""

MINIMAL_PAIR_MAX_EDITS = 2
"""Two prompts at most this many word edits apart, one a replacement, are the same sentence with a swap."""

MINIMAL_PAIR_LONG_WORDS = 6
"""From this many words on, one more edit is allowed ('Pride and Prejudice' -> 'Emma')."""

TYPO_MIN_SIMILARITY = 0.8
"""Normalised OSA similarity (two swapped letters are one edit) from which two words of 4+ letters are one."""

COMPOUND_MIN_LETTERS = 6
"""Shortest closed compound ('quicksort', 'datetime') looked for as two words on the other side."""

SHARED_PREFIX_LETTERS = 6
"""Two unmatched words sharing this many first letters share a root and match like a typo."""

LOW_WEIGHT = 0.3
"""Weight of generic words (use, get, explain, error...) that carry little of what is asked."""

QUESTION_WORD_WEIGHT = 0.7
"""Weight of why/when/where/who: they change what is asked, but users also reword them away."""

FOLLOWUP_THRESHOLD = 2.5
"""Evidence score at or above which the next prompt is a clarifying follow-up."""

FOLLOWUP_MAX_WORDS = 30
"""A next prompt longer than this many words is a new task description, never a short clarifying question."""

FOLLOWUP_VERY_SHORT_WORDS = 2
"""A question of one or two words ('why?', 'meaning?') has no meaning without the previous answer."""

FOLLOWUP_SHORT_WORDS = 6
"""A question this short ('why 2%?', 'which one?') leans on the previous answer for its meaning."""

FOLLOWUP_LONG_WORDS = 16
"""A question longer than this usually states its own subject."""

NEAR_REPHRASE_SIMILARITY = 0.4
"""A next prompt this similar to the previous one, with nothing pointing back, is a near-rephrase."""


class FollowupWeights(NamedTuple):
    """Evidence weights of a clarifying follow-up, summed and compared with FOLLOWUP_THRESHOLD."""

    question_mark: float = 1.0  # '?' anywhere
    interrogative_start: float = 1.0  # what/why/is/does/so/wait... after any leading 'thanks'
    clarify_phrase: float = 2.0  # 'what do you mean', 'explain', 'example', 'which one', 'what if'...
    anaphora: float = 1.5  # it/that/this/the second/step... points back at the answer
    grounded: float = 1.5  # names a word the answer introduced (not the user's own prompt)
    novel_word: float = -0.5  # per content word found in neither the answer nor the prompt...
    novel_cap: float = -1.5  # ...capped, so that 'what if I paid with a gift card?' survives
    task_verb: float = -2.0  # opens like a new task: write/translate/give/plan...
    how_to: float = -1.0  # 'how do I <verb>' with nothing pointing back: a new how-to
    very_short: float = 1.5  # one or two words ('why?', 'meaning?'): meaningless without the answer
    short: float = 0.5
    long: float = -1.0
    near_rephrase: float = -1.5  # close to the previous prompt: asks it again rather than about the answer


FOLLOWUP_WEIGHTS = FollowupWeights()
"""The weights in use (hand-set on the tune split)."""

_ACKNOWLEDGEMENT_SCORE = -5.0
_REPHRASE_SCORE = -5.0
_NORMALISE_CACHE_SIZE = 8192


def _words(text: str) -> frozenset[str]:
    """The whitespace-separated words of a lexicon block."""
    return frozenset(text.split())


# ------------------------------------------------------------------------------------------------------------
# Lexicons: read-only tables built at import. Each entry is a common way of wording a request in general,
# not a patch for one labelled pair.
# ------------------------------------------------------------------------------------------------------------

# Function words and politeness; also "1", as "a cup" and "1 cup" ask the same.
_STOP_WORDS = _words(
    """
    a an the i me my mine myself we us our ours you your yours he him his she her it its they them their
    this that these those is am are was were be been being do does did doing done have has had having can
    could would should will shall may might must to of in on at for with from by about as into onto and or
    but if so then than there here what how some any all just also very really please pls plz hi hello hey
    ok okay one someone anyone something anything now still even again too more most much many such own same
    other else each every both actually basically exactly possible kind let lets thing things stuff way ways
    which whose whom able 1
    """
)

# Question words that change what is asked ("when did it fall" is not "why did it fall").
_QUESTION_WORDS = frozenset({"why", "when", "where", "who"})
# ...which inside a sentence are usually conjunctions or relative pronouns.
_CONJUNCTIONS = frozenset({"when", "where", "who"})

_LOW_WEIGHT_WORDS = _words(
    """
    use using used get make do go give tell show help need want like know best good great simple simply easy
    quick example examples tip tips work works working method methods approach question questions explain
    explanation understand write create find try correct right properly proper new thing idea ideas recipe
    process common keyword option options something someone typical typically normally usually general
    generally suggest recommend step steps guide tutorial code script program duration time degree degrees
    calculate compute say says said throw throws up down out off over through via across around back away
    going gonna wanna put state fix solve error issue problem top nice ideal optimal language cook advice
    suggestion term terms rewrite rephrase reword formula
    """
)

# Multi-word phrasings mapped to one canonical word, or to nothing ("": framing that asks nothing itself).
_PHRASES: dict[str, str] = {
    # question framing
    "what is the best way to": "",
    "what is the easiest way to": "",
    "what is the simplest way to": "",
    "what is a good way to": "",
    "what is the way to": "",
    "what are the steps to": "",
    "is there any way to": "",
    "is there a way to": "",
    "is it possible to": "",
    "the best way to": "",
    "the easiest way to": "",
    "best way to": "",
    "easiest way to": "",
    "any way to": "",
    "steps to": "",
    "how to": "",
    "how do i": "",
    "how can i": "",
    "how would i": "",
    "how should i": "",
    "how do you": "",
    "can you": "",
    "could you": "",
    "would you": "",
    "i want to": "",
    "i need to": "",
    "i would like to": "",
    "i am trying to": "",
    "trying to": "",
    "help me": "",
    "tell me": "",
    "show me": "",
    "tips to": "",
    "tips for": "",
    "or not": "",
    "explain to me": "explain",
    # what kind of answer is wanted
    "what caused": "why",
    "what causes": "why",
    "what is causing": "why",
    "what makes": "why",
    "what made": "why",
    "how come": "why",
    "reasons for": "why",
    "reason for": "why",
    "what year": "when",
    "which year": "when",
    "what date": "when",
    "how many": "count",
    "number of": "count",
    "how long": "duration",
    "how much time": "duration",
    "how many minutes": "duration",
    "how many hours": "duration",
    "how many days": "duration",
    "how many weeks": "duration",
    "how early": "when",
    "fall asleep": "sleep",
    "get to sleep": "sleep",
    "go to sleep": "sleep",
    "rename": "change name",
    "log out": "logout",
    "sign out": "logout",
    "customer service": "support",
    "customer support": "support",
    "help desk": "support",
    "get in touch with": "contact",
    "reach out to": "contact",
    "add up": "sum",
    "pros and cons": "advantage disadvantage",
    "how many people live in": "population",
    "right now": "current",
    "at the moment": "current",
    "these days": "current",
    "science fiction": "scifi",
    "sci fi": "scifi",
    "world war ii": "ww2",
    "world war 2": "ww2",
    "world war two": "ww2",
    "wwii": "ww2",
    "world war i": "ww1",
    "world war 1": "ww1",
    "world war one": "ww1",
    "wwi": "ww1",
    "how tall": "height",
    "how high": "height",
    "how old": "age",
    "how far": "distance",
    "how big": "size",
    "how heavy": "weight",
    "time of year": "season",
    "time of the year": "season",
    "how do you say": "translate",
    "how to say": "translate",
    "who is the author of": "who author",
    "in simple terms": "simple",
    "in simpler terms": "simple",
    "like i am five": "simple",
    "eli5": "simple",
    # verbs in several words
    "get rid of": "remove",
    "figure out": "find",
    "find out": "find",
    "look up": "find",
    "come up with": "create",
    "put together": "create",
    "speed up": "fast",
    "log in": "login",
    "sign in": "login",
    "log on": "login",
    "sign up": "signup",
    "set up": "setup",
    "check out": "checkout",
    "opt out of": "unsubscribe",
    "opt out": "unsubscribe",
    "stop receiving": "unsubscribe",
    "say no to": "decline",
    "turn down": "decline",
    "goes well with": "pair",
    "go well with": "pair",
    "goes with": "pair",
    "make it to": "attend",
    "does not work": "not",
    "not working": "not",
    "without losing": "keep",
    "not losing": "keep",
    # nouns and modifiers in several words
    "e mail": "email",
    "new york city": "nyc",
    "new york": "nyc",
    "los angeles": "la",
    "united states": "usa",
    "united kingdom": "uk",
    "date and time": "datetime",
    "date time": "datetime",
    "data frame": "dataframe",
    "regular expression": "regex",
    "big o": "complexity",
    "place to stay": "hotel",
    "places to stay": "hotel",
    "most recent": "last",
    "entry level": "junior",
    "instead of": "substitute",
    "in place of": "substitute",
    "alternative to": "substitute",
    "replacement for": "substitute",
    "money back": "refund",
    "double charged": "charged twice",
    "two times": "twice",
    "2 times": "twice",
    "free of charge": "free",
    "without paying a fee": "free",
    "without a fee": "free",
    "with no fee": "free",
    "no fee": "free",
    "right after": "immediately",
    "as soon as": "immediately",
    "straight after": "immediately",
    "smallest to largest": "ascending",
    "lowest to highest": "ascending",
    "low to high": "ascending",
    "largest to smallest": "descending",
    "highest to lowest": "descending",
    "high to low": "descending",
    "dedupe": "remove duplicate",
    "sqrt": "square root",
}

# One group a line, canonical word first. Inflections are covered by stemming, irregular forms listed.
_SYNONYM_GROUPS = tuple(
    """
fix solve resolve repair troubleshoot debug
error issue problem bug mistake exception trouble glitch
remove delete erase eliminate clear strip kill clean
add insert append include
create make build generate construct built construction made produce
write draft compose implement
author wrote written writer
show display print output view
get obtain retrieve fetch find got found locate search identify detect receive received
under below
big large huge bigger larger massive
small little tiny smaller
fast quick quickly rapid faster quicker speed speedy efficient efficiently swift
slow sluggish laggy slower slowly
easy simple simply basic straightforward easiest simplest
hard difficult tough challenging
setup install configure config configuration
run execute ran
use utilize utilise employ apply
save persist
copy duplicate clone
move transfer migrate
split divide separate
connect link attach
forget forgot forgotten
break broke
buy purchase bought
sell sold
send sent
pay paid
lose lost loss
choose chose chosen pick select
start begin commence
finish complete
change modify alter edit update adjust tweak convert conversion transform turn
combine merge join concatenate concat
handle catch manage deal cope
reverse invert
undo revert rollback
stop prevent avoid exit quit halt block
allow enable permit
reduce lower decrease cut minimize minimise shrink
improve enhance boost increase raise better
cancel terminate unsubscribe
decline refuse reject
ask request invitation invite inquire enquire
answer reply respond response
attend come
bring take carry
keep preserve maintain retain
check test verify validate proofread confirm ensure see
learn study master
explain describe
meaning definition define mean average avg
difference differ vs versus compare comparison distinction
recommend suggest advise recommendation suggestion advice tip tips
sort order arrange organize organise
calculate compute determine
count tally
sum total
benefit advantage pro
drawback disadvantage downside con
symptom sign
treat cure remedy treatment
fridge refrigerator
luggage baggage suitcase
city town
computer pc
ship shipping deliver delivery
damaged defective faulty
longer lengthen expand extend
bio biography
presentation slides deck
speech toast
length size len
pair pairing match
center centre middle
color colour
cheap inexpensive affordable cheapest cheaper budget
expensive pricey costly
price cost fee charge rate
discount promo coupon voucher
money cash funds
salary wage compensation
website site webpage
app application software tool program
picture image photo pic
movie film
song track tune
example sample instance
visit travel trip journey vacation holiday tourist tourism
arrive reach
message email mail
client customer
late delayed delay overdue
mom mother mum
dad father
book novel
missing nan null
flight fly airfare airplane aeroplane
hotel accommodation lodging
house home
job position role employment
boss manager supervisor
coworker colleague
friend buddy pal
doctor physician
kid child children kids
phone smartphone mobile cellphone
car auto vehicle
title headline heading
specific exact particular certain
important key main essential crucial
common typical usual normal
popular famous
wrong incorrect
safe secure
healthy nutritious
polite courteous respectful politely
rude impolite
happy glad
sad unhappy upset
angry annoyed furious
immediately instantly
password pw pwd passcode
reset recover
login signin logon
signup register registration
shorten shorter concise condense brief briefly
summary summarize summarise recap synopsis overview
resume cv
package parcel library lib module
repo repository
function func fn
argument arg param parameter
variable var
database db
directory dir folder
file document doc
string str
dictionary dict hashmap
number numeric digit integer int
item element
property field attribute prop
read load
iterate loop
substitute replacement alternative replace swap
itinerary plan schedule
need require requirement
current today present
chance probability odds likelihood
toss flip
derivative differentiate derive
why reason cause
fall collapse
night evening
dinner supper
dessert sweets
death die died dead
invent inventor invented
highest largest biggest maximum max greatest tallest
lowest smallest minimum least
second 2nd
first 1st
third 3rd
last latest newest
usa america american americans
uk britain
javascript js
python py
typescript ts
postgres postgresql psql
kubernetes k8s
node nodejs node.js
nullpointerexception npe
regex regexp
vegetarian veggie meatless
percent % pct percentage
minute min mins
hour hr hrs
kilometer km kilometre
mile mi
pound lb lbs
kilogram kg
gram grams g
tablespoon tbsp
teaspoon tsp
fahrenheit f
celsius c centigrade
temperature temp
duration time
""".strip().splitlines()
)

# Words naming alternatives of one kind: two prompts that differ by two of them ask different things.
_CONTRAST_GROUPS = tuple(
    """
python javascript java typescript c c++ c# go golang rust ruby php swift kotlin scala bash powershell perl
sql r
postgres mysql sqlite mongodb redis oracle
pandas numpy excel csv json xml yaml
react vue angular svelte django flask rails spring
windows mac macos linux ubuntu android ios
list array string number float dictionary set tuple dataframe
who when where why
ascending descending
increase decrease
add remove insert
highest lowest
first second third last
before after
upload download
encode decode
encrypt decrypt
read write
import export
open close
start stop
enable disable
horizontal vertical
left right
up down
buy sell
send receive
push pull
hot cold warm
summer winter spring autumn
morning night afternoon
soft hard runny
formal casual informal
active passive
past present future
senior junior
simple compound
local remote
public private readonly optional required
linear quadratic cubic
square cube
derivative integral
sin cos tan
key value
get post put patch
pause cancel upgrade downgrade refund return exchange
monday tuesday wednesday thursday friday saturday sunday
january february march april may june july august september october november december
""".strip().splitlines()
)

_NUMBER_WORDS = {
    "zero": "0",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "thousand": "1000",
}

_CONTRACTIONS = {
    "re": ("are",),
    "m": ("am",),
    "ll": ("will",),
    "ve": ("have",),
    "d": ("would",),
    "s": ("is",),
}
_NEGATED_CONTRACTIONS = {"can't": ("can", "not"), "won't": ("will", "not"), "shan't": ("shall", "not")}

# The same contractions typed without an apostrophe.
_BARE_CONTRACTIONS = {
    "cant": "can not",
    "cannot": "can not",
    "wont": "will not",
    "dont": "do not",
    "doesnt": "does not",
    "didnt": "did not",
    "isnt": "is not",
    "arent": "are not",
    "wasnt": "was not",
    "shouldnt": "should not",
    "wouldnt": "would not",
    "couldnt": "could not",
    "whats": "what is",
    "hows": "how is",
    "im": "i am",
    "ive": "i have",
}

_NEGATIONS = _words("not no without never nor unable fail fails failed broken")
_DIRECTION_WORDS = frozenset({"to", "into", "->"})

# Punctuation becomes space. Kept: ' (contractions), . (node.js, 1.5), + and # (c++, c#), % and _ (snake_case)
_ASCII_PUNCTUATION = '!"$&()*,/:;<=>?@[\\]^`{|}~-'
_PUNCTUATION = str.maketrans(
    dict.fromkeys(_ASCII_PUNCTUATION, " ")
    | dict.fromkeys("\u201c\u201d\u2014\u2013\u2026\u00bf\u00a1\u00ab\u00bb\uff1f\uff0c\u3002", " ")
    | {"\u2019": "'", "\u2018": "'"}
)
_ASCII_PUNCTUATION_BYTES = bytes.maketrans(_ASCII_PUNCTUATION.encode(), b" " * len(_ASCII_PUNCTUATION))
# "400F", "5km": a number glued to its unit.
_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?)(km|kg|lbs?|g|ml|l|f|c|cm|mm|m|h|hrs?|mins?|s|gb|mb|k)")
# "US" in capitals is the country; lower-cased it would be the stop word "us".
_US_RE = re.compile(r"\bU\.?S\.?A?\b\.?")
# "1,000" is one number, not "1" and "000".
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}\b)")


def _stem(word: str) -> str:
    """Strip common English inflections so 'sorting', 'sorted', 'sorts' and 'sort' meet; ASCII words only."""
    if len(word) <= 3 or not word.isascii() or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("ing") and len(word) > 5:
        word = word[:-3]
        if word[-1] == word[-2] and word[-1] not in "lsz":  # running -> run
            word = word[:-1]
    elif word.endswith("ed") and len(word) > 4 and not word.endswith("eed"):
        word = word[:-2]
        if word[-1] == word[-2] and word[-1] not in "lsz":  # stopped -> stop
            word = word[:-1]
    elif word.endswith("es") and len(word) > 4 and (word[-3] in "sxz" or word[-4:-2] in ("ch", "sh")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    elif word.endswith("ly") and len(word) > 6:
        word = word[:-2]
    if word.endswith("e") and len(word) > 3:  # reverse/reversing -> revers
        word = word[:-1]
    return word


def _build_synonyms() -> dict[str, str]:
    synonyms: dict[str, str] = {}
    for line in _SYNONYM_GROUPS:
        words = line.split()
        for word in words:
            synonyms[_stem(word)] = _stem(words[0])
    return synonyms


_SYNONYMS = _build_synonyms()


@lru_cache(maxsize=_NORMALISE_CACHE_SIZE)
def _canonical(word: str) -> str:
    """The word's stem, mapped to its synonym group's canonical stem."""
    stem = _stem(word)
    return _SYNONYMS.get(stem, stem)


def _build_contrasts() -> dict[str, int]:
    contrasts: dict[str, int] = {}
    for group, line in enumerate(_CONTRAST_GROUPS):
        for word in line.split():
            contrasts.setdefault(_canonical(word), group)
    return contrasts


_CONTRASTS = _build_contrasts()
_NUMBER_GROUP = -1  # any two different numbers are alternatives
_LOW_WEIGHT = frozenset(_canonical(word) for word in _LOW_WEIGHT_WORDS)


_Phrases = list[tuple[tuple[str, ...], tuple[str, ...]]]


def _build_phrase_index() -> dict[str, dict[str, _Phrases]]:
    """Phrases of two or more words by first then second word, longest first: a look-up or two a word."""
    index: dict[str, dict[str, _Phrases]] = {}
    for phrase in sorted(_PHRASES, key=lambda p: -len(p.split())):
        words = tuple(phrase.split())
        if len(words) > 1:
            replacement = tuple(_PHRASES[phrase].split())
            index.setdefault(words[0], {}).setdefault(words[1], []).append((words, replacement))
    return index


_PHRASE_INDEX = _build_phrase_index()


def _weight(word: str) -> float:
    if word in _LOW_WEIGHT:
        return LOW_WEIGHT
    if word in _QUESTION_WORDS:
        return QUESTION_WORD_WEIGHT
    if len(word) == 1 and not word.isdigit():
        return 0.5  # a variable name or a unit letter
    return 1.0


class _Prompt(NamedTuple):
    """A prompt reduced to what it asks."""

    words: tuple[str, ...]  # every token, lower case, contractions expanded, number words as digits
    stems: tuple[str, ...]  # the words after phrase mapping, content words canonical: for word edit distance
    content: Mapping[str, float]  # canonical content word -> weight
    numbers: tuple[str, ...]  # numbers in order of appearance: '2^10' is not '10^2'
    negations: int  # how many times the prompt negates: 'failed but charged' is not 'failed and not charged'
    directions: frozenset[tuple[str, str]]  # (source, target) around to/into: fahrenheit -> celsius
    total: float  # sum of the content weights
    groups: Mapping[str, int]  # content words that have known alternatives -> their contrast group
    squashed: str  # the words without spaces: a compound of the other prompt can only be a part of it


# Whole words replaced by others while tokenising: "dont" -> "do not", "two" -> "2", "sqrt" -> "square root".
_WORD_EXPANSIONS: dict[str, tuple[str, ...]] = (
    {word: tuple(text.split()) for word, text in _BARE_CONTRACTIONS.items()}
    | {word: (digits,) for word, digits in _NUMBER_WORDS.items()}
    | {phrase: tuple(text.split()) for phrase, text in _PHRASES.items() if " " not in phrase}
)


def _tokenise(text: str) -> list[str]:
    """Lower-case words with contractions expanded, number words as digits and units split from numbers."""
    if "US" in text or "U.S" in text:
        text = _US_RE.sub(" usa ", text)
    if "," in text:
        text = _THOUSANDS_RE.sub("", text)
    text = text.lower().replace("->", " to ")
    if text.isascii():  # most prompts: bytes.translate is several times faster than str.translate
        chunks = text.encode().translate(_ASCII_PUNCTUATION_BYTES).decode().split()
    else:
        chunks = unicodedata.normalize("NFKC", text).translate(_PUNCTUATION).split()
    words: list[str] = []
    append, extend, expansions = words.append, words.extend, _WORD_EXPANSIONS
    for chunk in chunks:
        if chunk.isalpha():  # the common case: a plain word
            expanded = expansions.get(chunk)
            if expanded is None:
                append(chunk)
            else:
                extend(expanded)
            continue
        chunk = chunk.strip("'.")
        if not chunk:
            continue
        if "'" in chunk:
            if chunk in _NEGATED_CONTRACTIONS:
                extend(_NEGATED_CONTRACTIONS[chunk])
                continue
            if chunk.endswith("n't"):
                extend((chunk[:-3], "not"))
                continue
            stem, _, suffix = chunk.rpartition("'")
            if suffix in _CONTRACTIONS:
                append(stem)
                extend(_CONTRACTIONS[suffix])
                continue
            chunk = chunk.replace("'", "")
        if chunk[0].isdigit() and not chunk.isdigit():
            if chunk.endswith("%"):
                extend((chunk[:-1], "%"))
                continue
            unit = _UNIT_RE.fullmatch(chunk)
            if unit:
                extend(unit.groups())
                continue
        elif not chunk[0].isalnum() and chunk != "%":
            continue  # a lone '+' or '#'
        extend(expansions.get(chunk, (chunk,)))
    return words


def _apply_phrases(words: list[str]) -> list[str]:
    """Replace multi-word phrasings by their canonical word, or drop them when they are only framing."""
    out: list[str] = []
    i, n = 0, len(words)
    index = _PHRASE_INDEX
    while i < n:
        word = words[i]
        by_second = index.get(word)
        if by_second is not None and i + 1 < n:
            for phrase, replacement in by_second.get(words[i + 1], ()):
                end = i + len(phrase)
                if end <= n and (end == i + 2 or tuple(words[i:end]) == phrase):
                    out.extend(replacement)
                    i = end
                    break
            else:
                out.append(word)
                i += 1
        else:
            out.append(word)
            i += 1
    return out


@lru_cache(maxsize=_NORMALISE_CACHE_SIZE)
def _lexeme(word: str) -> tuple[str, float, int | None]:
    """A content word's canonical form, its weight and its contrast group (None if it has no known rivals)."""
    canonical = _canonical(word)
    group = _CONTRASTS.get(canonical)
    if group is None and canonical[0].isdigit():
        group = _NUMBER_GROUP
    return canonical, _weight(canonical), group


_NO_DIRECTIONS: frozenset[tuple[str, str]] = frozenset()
_DIRECTION, _NEGATION, _STOP, _CONJUNCTION = range(4)
_WORD_CLASSES: dict[str, int] = (
    dict.fromkeys(_STOP_WORDS, _STOP)
    | dict.fromkeys(_CONJUNCTIONS, _CONJUNCTION)
    | dict.fromkeys(_NEGATIONS, _NEGATION)
    | dict.fromkeys(_DIRECTION_WORDS, _DIRECTION)
)


@lru_cache(maxsize=_NORMALISE_CACHE_SIZE)
def _normalise(text: str) -> _Prompt:
    """Reduce a prompt to canonical content words; cached, as a stream compares each prompt twice."""
    words = _tokenise(text)
    phrased = _apply_phrases(words)
    content: dict[str, float] = {}
    groups: dict[str, int] = {}
    stems: list[str] = []
    numbers: list[str] = []
    directions: set[tuple[str, str]] = set()
    before_arrow = ""  # the content word before a pending "to"/"into"
    previous = ""  # the last content word, or "->" right after "to"/"into"
    last = len(phrased) - 1
    classes, lexeme, keep = _WORD_CLASSES, _lexeme, stems.append
    for position, word in enumerate(phrased):
        kind = classes.get(word)
        if kind is not None:
            if kind == _DIRECTION:
                keep(word)
                before_arrow, previous = previous, "->"
                continue
            if kind == _NEGATION:
                word = "not"
            elif kind == _STOP or 0 < position < last:
                # inside a sentence "when"/"where"/"who" join clauses ("it fails when I call it"): no question
                keep(word)
                continue
        canonical, weight, group = lexeme(word)
        keep(canonical)
        if weight > content.get(canonical, 0.0):
            content[canonical] = weight
        if group is not None:
            groups[canonical] = group
            if group == _NUMBER_GROUP:
                numbers.append(canonical)
        if previous == "->" and before_arrow and before_arrow != "->":
            directions.add((before_arrow, canonical))
        previous = canonical
    return _Prompt(
        tuple(words),
        tuple(stems),
        content,
        tuple(numbers),
        stems.count("not"),
        frozenset(directions) if directions else _NO_DIRECTIONS,
        sum(content.values()),
        groups,
        "".join(words),
    )


# ------------------------------------------------------------------------------------------------------------
# Rephrase
# ------------------------------------------------------------------------------------------------------------


def _match_compounds(only_a: dict[str, float], only_b: dict[str, float], words_b: tuple[str, ...]) -> float:
    """Match a closed compound on one side ('quicksort') with its two words on the other ('quick sort')."""
    matched = 0.0
    for word in [word for word in only_a if len(word) >= COMPOUND_MIN_LETTERS]:
        for first, second in itertools.pairwise(words_b):
            joined = first + second
            # `word` is a stem: 'datetim' for 'datetime'
            if joined.startswith(word) and len(joined) - len(word) <= 3:
                parts = _lexeme(first)[0], _lexeme(second)[0]
                if parts[0] in only_b and parts[1] in only_b and parts[0] != parts[1]:
                    matched += only_a.pop(word)
                    del only_b[parts[0]], only_b[parts[1]]
                    break
    return matched


def _match_typos(only_a: dict[str, float], only_b: dict[str, float]) -> float:
    """Match leftover words that are a mistyped or shortened word ('revrse'/'reverse', 'config'/'configs')."""
    matched = 0.0
    for word in list(only_a):
        if len(word) < 4 or not only_b:
            continue
        best, best_similarity = "", 0.0
        for other in only_b:
            if len(other) < 4 or other[0] != word[0] or (word in _CONTRASTS and other in _CONTRASTS):
                continue  # typos keep the first letter; 'java' is not a typo of 'javascript'
            if word.startswith(other) or other.startswith(word):
                similarity = 0.9  # cut short: 'config' / 'configur'
            elif word[:SHARED_PREFIX_LETTERS] == other[:SHARED_PREFIX_LETTERS]:
                similarity = TYPO_MIN_SIMILARITY  # one root: 'scrollabl'/'scrollbar', 'apologiz'/'apology'
            elif len(word) == len(other) == 4:
                # in four letters one changed letter is another word ('cast'/'cost'); two swapped are a typo
                similarity = 0.9 if OSA.distance(word, other) == 1 and sorted(word) == sorted(other) else 0.0
            else:
                similarity = OSA.normalized_similarity(word, other)  # a swap of two letters is one edit
            if similarity > best_similarity:
                best, best_similarity = other, similarity
        if best_similarity >= TYPO_MIN_SIMILARITY:
            matched += best_similarity * min(only_a.pop(word), only_b.pop(best))
    return matched


def _may_be_compound(only_a: dict[str, float], only_b: dict[str, float], b: _Prompt) -> bool:
    """Whether a leftover word of one side may be two words of the other written together."""
    return len(only_b) >= 2 and any(
        len(word) >= COMPOUND_MIN_LETTERS and word in b.squashed for word in only_a
    )


def _typo_reachable(only_a: dict[str, float], only_b: dict[str, float]) -> float:
    """An upper bound on the weight typo matching can add: typos are 4+ letters and keep their first one."""
    letters_a = {word[0] for word in only_a if len(word) >= 4}
    letters_b = {word[0] for word in only_b if len(word) >= 4}
    common = letters_a & letters_b
    if not common:
        return 0.0
    return min(
        sum(weight for word, weight in only_a.items() if len(word) >= 4 and word[0] in common),
        sum(weight for word, weight in only_b.items() if len(word) >= 4 and word[0] in common),
    )


def _is_minimal_pair(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """The same sentence with one word replaced ('reverse' -> 'sort'): people who reword change more."""
    shorter = min(len(a), len(b))
    if shorter < 3:
        return False
    max_edits = MINIMAL_PAIR_MAX_EDITS + (shorter >= MINIMAL_PAIR_LONG_WORDS)
    if Levenshtein.distance(a, b, score_cutoff=max_edits + 1) > max_edits:
        return False
    # Adjacent edits form one changed span: 'remote work' -> 'productivity' is a replace and a delete.
    spans: list[list[int]] = []
    for op in Levenshtein.opcodes(a, b):
        if op.tag == "equal":
            continue
        if spans and spans[-1][1] == op.src_start and spans[-1][3] == op.dest_start:
            spans[-1][1], spans[-1][3] = op.src_end, op.dest_end
        else:
            spans.append([op.src_start, op.src_end, op.dest_start, op.dest_end])
    swaps = 0
    for src_start, src_end, dest_start, dest_end in spans:
        replaced = {word for word in a[src_start:src_end] if word not in _STOP_WORDS}
        replacing = {word for word in b[dest_start:dest_end] if word not in _STOP_WORDS}
        if not replaced and not replacing:
            continue  # only stop words changed
        if not replaced or not replacing or min(len(replaced), len(replacing)) > 1:
            return False  # a word only added or dropped, or a whole phrase reworded: not a swap
        swaps += 1
    return swaps == 1


def _asks_for_alternative(a: _Prompt, b: _Prompt, only_a: dict[str, float], only_b: dict[str, float]) -> bool:
    """Whether the prompts differ by an alternative: python/javascript, 5/10, a swap, a reversed direction."""
    if a.groups and b.groups and only_a and only_b:
        groups_a = {a.groups[word] for word in only_a if word in a.groups}
        if groups_a and not groups_a.isdisjoint(b.groups[word] for word in only_b if word in b.groups):
            return True
    if a.negations != b.negations:
        return True  # "print without a newline" is the opposite of "print a newline"
    if sum(only_a.values()) + sum(only_b.values()) >= 1.0 and _is_minimal_pair(a.stems, b.stems):
        return True
    if (
        len(a.numbers) > 1
        and a.numbers != b.numbers
        and sorted(a.numbers) == sorted(b.numbers)
        and 2 * len(a.numbers) >= min(len(a.content), len(b.content))
    ):
        return True  # mostly numbers, an expression, where order is meaning: 2^10 vs 10^2
    return any((target, source) in b.directions for source, target in a.directions if source != target)


def _similarity(previous_prompt: str, next_prompt: str, floor: float) -> float:
    """`rephrase_similarity`, or, as soon as the score cannot reach `floor`, an upper bound below `floor`."""
    # Greedy typo matching depends on which side leads: a fixed order makes the score exactly symmetric.
    if next_prompt < previous_prompt:
        previous_prompt, next_prompt = next_prompt, previous_prompt
    a = _normalise(previous_prompt)
    b = _normalise(next_prompt)
    if not a.content or not b.content:
        return 1.0 if a.words and a.words == b.words else 0.0
    content_a, content_b = a.content, b.content
    matched = 0.0
    only_a: dict[str, float] = {}
    for word, weight in content_a.items():
        if word in content_b:
            matched += weight  # a word's weight depends on the word only: the same on both sides
        else:
            only_a[word] = weight
    only_b = {word: weight for word, weight in content_b.items() if word not in content_a}
    total = a.total + b.total
    if only_a and only_b:
        compound_a = _may_be_compound(only_a, only_b, b)
        compound_b = _may_be_compound(only_b, only_a, a)
        if floor > 0.0 and not (compound_a or compound_b):
            bound = 2.0 * (matched + _typo_reachable(only_a, only_b)) / total
            if bound < floor:
                return bound  # even if every leftover that could still match did, the floor is out of reach
        if compound_a:
            matched += _match_compounds(only_a, only_b, b.words)
        if compound_b:
            matched += _match_compounds(only_b, only_a, a.words)
        if only_a and only_b:
            matched += _match_typos(only_a, only_b)
    elif 2.0 * matched / total < floor:
        return 2.0 * matched / total
    score = 2.0 * matched / total
    if only_a and only_b:
        substituted = min(sum(only_a.values()), sum(only_b.values()))
        score *= 1.0 - SUBSTITUTION_PENALTY * min(1.0, substituted)
    if _asks_for_alternative(a, b, only_a, only_b):
        score *= 1.0 - CONTRAST_PENALTY
    return max(0.0, min(1.0, score))


def rephrase_similarity(previous_prompt: str, next_prompt: str) -> float:
    """How much `next_prompt` asks the same thing as `previous_prompt`: 0.0 (unrelated) to 1.0 (the same).

    Both prompts are reduced to canonical content words: lower case, contractions expanded, question framing
    ('how do I', "what's the best way to") and stop words dropped, words stemmed and mapped through a small
    synonym lexicon ('fix'/'solve', 'dict'/'dictionary'), typos and split compounds matched. The score is the
    weighted Dice coefficient of those words (generic words such as 'use' or 'explain' weigh 0.3), lowered by
    SUBSTITUTION_PENALTY when each prompt keeps a word the other lacks ('sort' for 'reverse'), and by
    CONTRAST_PENALTY when they differ by alternatives: known rivals (python/javascript, ascending/descending),
    other numbers, a swapped direction (fahrenheit to celsius / celsius to fahrenheit) or one word replaced in
    an otherwise identical sentence. Symmetric. 0.0 when either prompt has no content word, unless both are
    the same words.
    """
    return _similarity(previous_prompt, next_prompt, 0.0)


def is_rephrase(previous_prompt: str, next_prompt: str) -> bool:
    """True when `next_prompt` asks what `previous_prompt` asked again, verbatim or in other words.

    A different request on the same topic ('sort' after 'reverse a list'), the same request for another
    language or number, a follow-up and a new task are not rephrases. Empty prompts never are.
    """
    return _similarity(previous_prompt, next_prompt, REPHRASE_THRESHOLD) >= REPHRASE_THRESHOLD


# ------------------------------------------------------------------------------------------------------------
# Clarifying follow-up
# ------------------------------------------------------------------------------------------------------------

_ACKNOWLEDGEMENTS = _words(
    """
    thanks thank thx ty tysm cheers ok okay k kk cool great perfect nice awesome amazing excellent wonderful
    brilliant good fine alright sure yes yeah yep yup got gotcha understood noted love lovely neat sweet wow
    interesting done worked works makes sense helpful appreciate appreciated
    """
)
_ACKNOWLEDGEMENT_TAIL = _words("you it that so much very")  # "thank you so much", "got it"

_INTERROGATIVES = _words(
    """
    what why how which where when who whom whose is are was were does do did can could would should will shall
    so but and wait really huh hmm sorry
    """
)

# First words of a new task; a clarifying question does not open with them.
_TASK_VERBS = _words(
    """
    write create generate make give translate summarize summarise draft compose plan list suggest recommend
    convert calculate compute solve implement build design find book tell rewrite fix add remove delete send
    produce prepare compare sort reverse count help code refactor optimize optimise debug review proofread
    edit shorten expand improve change update now next also
    """
)

# Words and phrasings that ask about something already said ("what do you mean", "which one", "what if").
_CLARIFY_WORDS = _words(
    """
    mean means meant meaning explain explanation clarify clarification elaborate example examples instance
    exactly confused confusing eli5
    """
)
_CLARIFY_PHRASES = frozenset(
    tuple(phrase.split())
    for phrase in """
    what if|what about|which one|which ones|which is|which of|how so|like what|why not|how come|stand for
    such as|more detail|in detail|walk me through|go over|tell me more|say more|more about|of what|expand on
    break it down|break that down|break this down|difference between|simpler terms|not sure what
    do not understand|do not get|lost me|go deeper
    """.replace("\n", "|").split("|")
    if phrase.strip()
)

# Words that point back at the answer: "that", "the second step", "you mentioned".
_ANAPHORA = _words(
    """
    it that this those these they them their there above previous earlier mentioned said wrote suggested
    first second third fourth fifth last step steps option options part point one ones
    """
)

_HOW_TO_STARTS = frozenset(
    {("how", "to"), ("how", "do"), ("how", "can"), ("how", "would"), ("how", "should"), ("how", "could")}
)
_HOW_TO_EXCEPTIONS = frozenset({"know", "tell"})  # "how do I know if it's done?" asks about the answer


_CLARIFY_FIRST_WORDS = frozenset(phrase[0] for phrase in _CLARIFY_PHRASES)


def _asks_to_clarify(words: tuple[str, ...]) -> bool:
    """Whether the words contain a clarification cue ('what do you mean', 'example', 'which one')."""
    if not _CLARIFY_WORDS.isdisjoint(words):
        return True
    for i, word in enumerate(words):
        if word in _CLARIFY_FIRST_WORDS and (
            words[i : i + 2] in _CLARIFY_PHRASES or words[i : i + 3] in _CLARIFY_PHRASES
        ):
            return True
    return False


def _is_new_how_to(words: tuple[str, ...]) -> bool:
    """'how do I make gumbo': a how-to question that opens a new task."""
    if len(words) < 3 or (words[0], words[1]) not in _HOW_TO_STARTS:
        return False
    verb = words[2] if words[1] == "to" else words[3] if len(words) > 3 else ""
    return verb not in _HOW_TO_EXCEPTIONS


def _with_thousands_separators(number: str) -> str:
    """'1102.50' -> '1,102.50', the way an answer may print the number the user repeats."""
    whole, dot, fraction = number.partition(".")
    return f"{int(whole):,}{dot}{fraction}" if whole.isdigit() and len(whole) > 3 else number


def _strip_acknowledgement(words: tuple[str, ...]) -> tuple[str, ...]:
    """Drop a leading 'thanks!' or 'ok, great' so that 'thanks! but why 5?' is judged by its question."""
    i = 0
    while i < len(words) and (words[i] in _ACKNOWLEDGEMENTS or (i and words[i] in _ACKNOWLEDGEMENT_TAIL)):
        i += 1
    return words[i:]


def _stem_in(word: str, text: str) -> bool:
    """Whether `text` contains the canonical `word`'s stem (4+ letters): 'idempot' in 'idempotent'."""
    return len(word) >= 4 and word[: max(4, len(word) - 2)] in text


def _spelled_in(spellings: list[str], text: str) -> bool:
    """Whether `text` contains one of the user's spellings of a word as a whole word ('2%', '1,102.50')."""
    for spelling in spellings:
        if len(spelling) >= 3 or not spelling.isalpha():
            if spelling[0].isdigit():
                spelling = _with_thousands_separators(spelling)
            start = text.find(spelling)
            while start >= 0:
                end = start + len(spelling)
                before = text[start - 1] if start else " "
                after = text[end] if end < len(text) else " "
                if not (before.isalnum() or before == ".") and not after.isalnum():
                    return True
                start = text.find(spelling, start + 1)
    return False


def _followup_evidence(previous_prompt: str, previous_response: str, next_prompt: str) -> tuple[float, bool]:
    """Evidence that `next_prompt` asks about `previous_response`, before comparing it with the previous
    prompt (or, once it cannot reach FOLLOWUP_THRESHOLD, some value below it); and whether it points back at
    the answer ('that', 'the second step')."""
    nxt = _normalise(next_prompt)
    words = nxt.words
    if not words or len(words) > FOLLOWUP_MAX_WORDS:
        return _ACKNOWLEDGEMENT_SCORE, False
    rest = _strip_acknowledgement(words)
    if not rest:
        return _ACKNOWLEDGEMENT_SCORE, False
    question = "?" in next_prompt or "\uff1f" in next_prompt
    clarify = _asks_to_clarify(rest)
    if len(rest) < len(words) and not (question or clarify):
        return _ACKNOWLEDGEMENT_SCORE, False  # "thanks, that worked": no question after the thanks

    weights = FOLLOWUP_WEIGHTS
    score = weights.question_mark if question else 0.0
    if rest[0] in _INTERROGATIVES:
        score += weights.interrogative_start
    elif rest[0] in _TASK_VERBS and not clarify:
        score += weights.task_verb
    if clarify:
        score += weights.clarify_phrase
    anaphora = not _ANAPHORA.isdisjoint(rest)
    if anaphora:
        score += weights.anaphora
    elif _is_new_how_to(rest):
        score += weights.how_to  # "how do I make gumbo" is a new how-to even when the answer named gumbo
    if len(rest) <= FOLLOWUP_VERY_SHORT_WORDS:
        score += weights.very_short
    elif len(rest) <= FOLLOWUP_SHORT_WORDS:
        score += weights.short
    elif len(rest) > FOLLOWUP_LONG_WORDS:
        score += weights.long

    if score + weights.grounded < FOLLOWUP_THRESHOLD:
        return score, anaphora  # out of reach whatever the words: spare the search through the answer

    # A clarifying question is about words the answer introduced; words from neither side are a new subject.
    # Words of the user's own prompt prove nothing: a new question on the same topic repeats them too.
    asked = _normalise(previous_prompt).content
    subject = [
        word for word, weight in nxt.content.items() if weight == 1.0 and word != "not" and word not in asked
    ]
    if subject:
        # Lower-cased only: NFKC over a long answer would cost more than the rest of the call.
        response = previous_response.lower()
        unfound = [word for word in subject if not _stem_in(word, response)]
        if unfound:
            spellings: dict[str, list[str]] = {}
            for spelling in rest:
                if spelling not in _WORD_CLASSES:
                    spellings.setdefault(_lexeme(spelling)[0], []).append(spelling)
            unfound = [word for word in unfound if not _spelled_in(spellings.get(word, []), response)]
        if len(unfound) < len(subject):
            score += weights.grounded
        score += max(weights.novel_word * len(unfound), weights.novel_cap)
    return score, anaphora


def _followup_score(previous_prompt: str, previous_response: str, next_prompt: str) -> float:
    """Evidence that `next_prompt` asks about `previous_response`; compared with FOLLOWUP_THRESHOLD."""
    score, anaphora = _followup_evidence(previous_prompt, previous_response, next_prompt)
    if score >= FOLLOWUP_THRESHOLD:
        similarity = _similarity(previous_prompt, next_prompt, NEAR_REPHRASE_SIMILARITY)
        if similarity >= REPHRASE_THRESHOLD:
            return _REPHRASE_SCORE  # a rephrase is never also a follow-up
        if not anaphora and similarity >= NEAR_REPHRASE_SIMILARITY:
            score += FOLLOWUP_WEIGHTS.near_rephrase
    return score


def is_clarifying_followup(previous_prompt: str, previous_response: str, next_prompt: str) -> bool:
    """True when `next_prompt` is a short question about `previous_response` rather than a new request.

    'what do you mean by idempotent?', 'why?', 'which one is faster?', 'can you explain the second step?'
    are; a new standalone request, a long task description (over FOLLOWUP_MAX_WORDS words), a bare
    acknowledgement ('thanks, that worked') and a rephrase of `previous_prompt` are not. Never True when
    `is_rephrase(previous_prompt, next_prompt)` is. English cues only: other languages read as not follow-ups.
    """
    # The comparison with the previous prompt can only lower the evidence: it is made only when needed.
    return _followup_score(previous_prompt, previous_response, next_prompt) >= FOLLOWUP_THRESHOLD
