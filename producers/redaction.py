"""Redaction at the edge: personal data out of free text before an event leaves the app.

The SDK (on the caller's thread, in every ``record_*`` call and in ``publish``) and the collector
(per posted event, before it answers 202) replace what the switched-on detectors find in the
free-text fields — an interaction's ``prompt``, ``response`` and ``metadata`` values, a feedback
event's ``corrected_output`` and ``comment`` — by a placeholder. Ids (``user_id``,
``session_id``), model names and numbers are not touched.

* **One word per value.** A placeholder has no spaces (``[email]``, ``[card]``, ``[ip]``,
  ``[phone]``, ``[<pattern name>]``), so the word diff of an edit sees one word where the value
  was, and the same value redacts to the same placeholder in the response and in the user's
  correction: redaction alone never looks like an edit. With a key, a placeholder also names its
  value by a keyed hash (``[email:3f9a0c12]``): the same value gives the same placeholder in every
  event, another value another one, so a correction that changes an address is still an edit.
  Values are compared in a canonical form (e-mail addresses in lower case, card and phone numbers
  by their digits, IP addresses as ``ipaddress`` writes them).
* **Marked.** An interaction gets ``metadata["redacted.<field>"] = "<kinds>"`` for each field
  that had something redacted (``redacted.prompt: "email,phone"``,
  ``redacted.metadata.client_ip: "ip"``). Feedback events have no metadata field in the contract:
  there the placeholders in the text are the mark.
* **Heuristics that err towards redacting.** Card numbers must pass the Luhn check and start with
  2-6 (every major network); phone numbers need a ``+``, parentheses, three or more digit groups
  or a ``-`` between two (``555-1234``), 7-15 digits, and are not dates; a run of bare digits
  (``5551234567``) is not taken for one. IPv4 needs four octets of at most 255, IPv6 what
  ``ipaddress`` accepts. A version number like ``1.2.3.4`` is redacted as an IP address.

Pure: no I/O. ``Redactor.from_settings`` returns None when nothing is switched on, and the SDK
then runs none of this (a redactor that finds nothing costs the scans: see docs/producers.md).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from infra.settings import RedactionSettings
from schemas import FeedbackEvent, InteractionEvent

Event: TypeAlias = InteractionEvent | FeedbackEvent
#: (start, end, canonical value) of one finding in a text.
Span: TypeAlias = tuple[int, int, str]

#: The built-in detectors, in the order they win an overlap (custom patterns come before them).
BUILT_IN: Final = ("email", "card", "ip", "phone")
#: The metadata key prefix that marks a redacted field (``redacted.prompt``).
MARKER_PREFIX: Final = "redacted."
#: The free-text fields redaction applies to, per event type (and the values of ``metadata``).
INTERACTION_TEXT: Final = ("prompt", "response")
FEEDBACK_TEXT: Final = ("corrected_output", "comment")
#: Hex digits of the keyed hash in a placeholder (32 bits: tells values apart within a text and
#: across a user's edits; not an identifier).
HASH_HEX: Final = 8

# -- the detectors ---------------------------------------------------------------------------------

# Every pattern here runs on text a user typed: none may backtrack more than linearly. A match
# may only start where a run of its characters starts (the lookbehinds), and the runs are taken
# possessively (``++``, Python 3.11), so a long word without an "@" costs one pass, not its square.
# The digit patterns begin with ``\d`` and check what precedes it after it (``\d(?<!...\d)``):
# a pattern that begins with a character class lets ``re`` skip to candidates in C, one that
# begins with a lookbehind tries every position (4-5 times slower on text without numbers).
_EMAIL = re.compile(
    r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]++@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)+"
)


def _emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for match in _EMAIL.finditer(text):
        yield match.start(), match.end(), match.group().lower()


# A run of 13+ digits with single spaces or hyphens between them; cards are found inside runs
# (a run may hold a card and a year: "4111 1111 1111 1111 2031").
_DIGIT_RUN = re.compile(r"\d(?<!\d\d)(?:[ -]?\d){12,}")
_GROUP = re.compile(r"\d+")
_CARD_LENGTHS: Final = (16, 15, 19, 14, 18, 17, 13)  # most common first


def luhn_valid(digits: str) -> bool:
    """Whether the digit string passes the Luhn check (the last digit is the check digit)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _cards(text: str) -> Iterator[Span]:
    for run in _DIGIT_RUN.finditer(text):
        base = run.start()
        if base and text[base - 1] == "+":  # +4915112345678 is a phone number
            continue
        groups = [(g.start() + base, g.end() + base, g.group()) for g in _GROUP.finditer(run.group())]
        first = 0
        while first < len(groups):
            found = _card_at(text, groups, first)
            if found is None:
                first += 1
                continue
            last, digits = found
            yield groups[first][0], groups[last][1], digits
            first = last + 1


def _card_at(text: str, groups: list[tuple[int, int, str]], first: int) -> tuple[int, str] | None:
    """The last group and digits of a card number starting at group ``first``, if there is one."""
    if groups[first][2][0] not in "23456":
        return None
    windows: dict[int, tuple[int, str]] = {}
    digits = ""
    separator = ""
    for last in range(first, len(groups)):
        if last > first:
            gap = text[groups[last - 1][1] : groups[last][0]]
            if separator and gap != separator:
                break
            separator = gap
        digits += groups[last][2]
        if len(digits) > 19:
            break
        if len(digits) >= 13:
            windows[len(digits)] = (last, digits)
    for length in _CARD_LENGTHS:
        if (window := windows.get(length)) is not None and luhn_valid(window[1]):
            return window
    return None


_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f.]*+:[0-9A-Fa-f:.]++(?![\w])")


def _ips(text: str) -> Iterator[Span]:
    # IPv6 first: ::ffff:10.0.0.1 is one address, not an IPv4 one with a prefix.
    if "::" in text or text.count(":") >= 2:
        for match in _IPV6.finditer(text):
            candidate = match.group().rstrip(".")
            if candidate.count(":") < 2 or not any(c in "0123456789abcdefABCDEF" for c in candidate):
                continue
            try:
                canonical = str(ipaddress.IPv6Address(candidate))
            except ValueError:
                continue
            yield match.start(), match.start() + len(candidate), canonical
    if "." in text:
        for match in _IPV4.finditer(text):
            try:
                yield match.start(), match.end(), str(ipaddress.IPv4Address(match.group()))
            except ValueError:
                continue


# From the first digit on: groups of digits joined by one of " .-", or by parentheses around an
# area code; a "+" or "(" just before the first digit is taken in afterwards.
_PHONE = re.compile(
    r"\d(?<![\w.\-/]\d)"
    r"(?:\d{6,14}|\d{0,7}(?:(?:[ .-]\(?|\(|\)[ .-]?)\d{1,8}){1,6})"  # 7+ digits, or 2+ groups
    r"(?![\w]|[.\-/]\d)"
)
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def _phones(text: str) -> Iterator[Span]:
    for match in _PHONE.finditer(text):
        start, value = match.start(), match.group()
        if start and text[start - 1] in "+(" and not (start > 1 and _WORDISH.match(text, start - 2)):
            start -= 1
            value = text[start] + value
        if value.count("(") != value.count(")"):
            continue
        groups = _GROUP.findall(value)
        digits = "".join(groups)
        if not 7 <= len(digits) <= 15:
            continue
        marked = value[0] == "+" or "(" in value
        if not marked and (
            len(groups) < 2 or (len(groups) == 2 and "-" not in value) or _DATE.fullmatch(value)
        ):
            continue
        yield start, match.end(), ("+" if value[0] == "+" else "") + digits


_WORDISH = re.compile(r"[\w+.\-/]")


_FINDERS: Final[dict[str, Callable[[str], Iterator[Span]]]] = {
    "email": _emails,
    "card": _cards,
    "ip": _ips,
    "phone": _phones,
}


def _pattern_finder(pattern: re.Pattern[str]) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        for match in pattern.finditer(text):
            if match.end() > match.start():  # a pattern that can match nothing must not insert
                yield match.start(), match.end(), match.group()

    return find


# -- the redactor ----------------------------------------------------------------------------------


_ANY_DIGIT = re.compile(r"\d")
#: Built-in detectors that find nothing in a text without a digit (one shared check skips them).
_NEED_DIGITS: Final = frozenset({"card", "phone"})


@dataclass(frozen=True)
class _Detector:
    kind: str
    find: Callable[[str], Iterator[Span]]
    needs_digit: bool = False


class Redactor:
    """Replaces what its detectors find in a text by placeholders; see the module's docstring.

    ``detectors`` are built-in names (:data:`BUILT_IN`), ``patterns`` map a placeholder name to a
    regular expression (they win overlaps, in their order, then the built-ins in theirs), ``key``
    makes placeholders name their value by a keyed hash.
    """

    def __init__(
        self,
        detectors: Iterable[str] = (),
        patterns: Mapping[str, str | re.Pattern[str]] | None = None,
        key: bytes | None = None,
    ) -> None:
        chosen = set(detectors)
        if unknown := chosen - set(BUILT_IN):
            raise ValueError(f"unknown redaction detectors {sorted(unknown)}; known: {list(BUILT_IN)}")
        custom = [
            _Detector(name, _pattern_finder(re.compile(pattern) if isinstance(pattern, str) else pattern))
            for name, pattern in (patterns or {}).items()
        ]
        built_in = (_Detector(k, _FINDERS[k], k in _NEED_DIGITS) for k in BUILT_IN if k in chosen)
        self._detectors = (*custom, *built_in)
        if not self._detectors:
            raise ValueError("a redactor needs at least one detector or pattern")
        self._key = key

    @classmethod
    def from_settings(cls, settings: RedactionSettings) -> Redactor | None:
        """The redactor ``settings`` describe, or None when nothing is switched on."""
        if not settings.detectors and not settings.patterns:
            return None
        key = settings.key.get_secret_value().encode() if settings.key is not None else None
        return cls(settings.detectors, settings.patterns, key)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The placeholder names this redactor can write, in the order they win overlaps."""
        return tuple(detector.kind for detector in self._detectors)

    def placeholder(self, kind: str, canonical: str) -> str:
        """The word a value of ``kind`` (in its canonical form) is replaced by."""
        if self._key is None:
            return f"[{kind}]"
        digest = hmac.digest(self._key, f"{kind}\0{canonical}".encode(), "sha256")
        return f"[{kind}:{digest.hex()[:HASH_HEX]}]"

    def redact(self, text: str) -> tuple[str, tuple[str, ...]]:
        """``text`` with every finding replaced, and the kinds found (sorted; empty: ``text`` itself)."""
        findings: list[tuple[int, int, str, str]] = []  # sorted by start, never overlapping
        has_digit: bool | None = None
        for detector in self._detectors:
            if detector.needs_digit:
                if has_digit is None:
                    has_digit = _ANY_DIGIT.search(text) is not None
                if not has_digit:
                    continue
            for start, end, canonical in detector.find(text):
                # An earlier detector's finding wins an overlap. Sorted + bisect: a text with
                # thousands of findings costs k log k, not k squared.
                at = bisect_left(findings, (start,))
                if (at and findings[at - 1][1] > start) or (at < len(findings) and findings[at][0] < end):
                    continue
                findings.insert(at, (start, end, detector.kind, canonical))
        if not findings:
            return text, ()
        parts: list[str] = []
        position = 0
        for start, end, kind, canonical in findings:
            parts += (text[position:start], self.placeholder(kind, canonical))
            position = end
        parts.append(text[position:])
        return "".join(parts), tuple(sorted({kind for _, _, kind, _ in findings}))

    def redact_interaction(self, fields: dict[str, Any]) -> bool:
        """Redact an interaction's fields (a dict of the contract's field names) in place; mark each
        redacted field in a new ``metadata`` dict (the caller's is not changed). True if anything was."""
        marks: dict[str, tuple[str, ...]] = {}
        for name in INTERACTION_TEXT:
            value = fields.get(name)
            if isinstance(value, str):
                redacted, kinds = self.redact(value)
                if kinds:
                    fields[name], marks[name] = redacted, kinds
        metadata = fields.get("metadata")
        copied: dict[Any, Any] | None = None
        if isinstance(metadata, dict):
            for key, value in metadata.items():
                if not isinstance(value, str) or (isinstance(key, str) and key.startswith(MARKER_PREFIX)):
                    continue
                redacted, kinds = self.redact(value)
                if kinds:
                    if copied is None:
                        copied = dict(metadata)
                    copied[key], marks[f"metadata.{key}"] = redacted, kinds
        if not marks:
            return False
        if copied is None:
            copied = dict(metadata) if isinstance(metadata, dict) else {}
        for field, kinds in marks.items():
            marker = MARKER_PREFIX + field
            before = copied.get(marker)
            known = set(before.split(",")) if isinstance(before, str) and before else set()
            copied[marker] = ",".join(sorted(known | set(kinds)))
        fields["metadata"] = copied
        return True

    def redact_feedback(self, fields: dict[str, Any]) -> bool:
        """Redact a feedback event's ``corrected_output`` and ``comment`` in place; True if anything was.

        The contract gives feedback no metadata: the placeholders are the mark.
        """
        changed = False
        for name in FEEDBACK_TEXT:
            value = fields.get(name)
            if isinstance(value, str):
                redacted, kinds = self.redact(value)
                if kinds:
                    fields[name] = redacted
                    changed = True
        return changed

    def redact_event(self, event: Event) -> Event:
        """``event`` with its free text redacted (validated again), or ``event`` itself when nothing was."""
        fields = dict(event.__dict__)
        if isinstance(event, InteractionEvent):
            if self.redact_interaction(fields):
                return InteractionEvent.model_validate(fields)
        elif self.redact_feedback(fields):
            return FeedbackEvent.model_validate(fields)
        return event


__all__ = [
    "BUILT_IN",
    "FEEDBACK_TEXT",
    "HASH_HEX",
    "INTERACTION_TEXT",
    "MARKER_PREFIX",
    "Redactor",
    "luhn_valid",
]
