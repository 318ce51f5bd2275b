"""The prompt registry: every prompt version, its parent, the one change it made and why.

The registry is a JSON file in the project (``settings.insights.prompt_registry``, by default
``prompts.json``), managed with ``feedbackloop prompts add | list | show`` and mirrored into the
ClickHouse table ``prompt_versions`` whenever the CLI or the report can reach ClickHouse.

Why a file and not a table or a topic: chdb allows one process per data directory and the sink
holds it while the worker runs, so a table could not be written while the pipeline runs; a file
can, at any time. A file is also what a team reviews: a prompt change arrives as a diff in a pull
request next to the code that uses it, with its reasoning. ClickHouse gets a mirror (the views
``prompt_changelog`` and ``user_contributions`` join it to the outcomes), refreshed by every
``prompts add`` when chdb is free and by every ``report`` / ``insights sync``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from clickhouse_connect.driver.client import Client
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from infra.settings import check_database_name

#: Version of the registry file's layout.
FILE_FORMAT = 1

VersionLabel = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/+-]+$")
]


class RegistryError(ValueError):
    """The registry file or a new entry is not valid (the message says why)."""


#: The kinds of reference ``addresses`` may hold, and what each names (docs/insights.md; the SQL of the
#: view ``time_to_fix`` in migration 0014 reads them the same way).
FIX_KINDS = {
    "edit": "a replacement pattern: 'edit: ORIGINAL -> CORRECTED', fragments as normalized in edit_patterns",
    "insert": "an insertion pattern: 'insert: FRAGMENT' (the inserted fragment, normalized)",
    "delete": "a deletion pattern: 'delete: POSITION UNIT', e.g. 'delete: closing paragraph'",
    "ticket": "AI-quality support tickets of a category: 'ticket: CATEGORY'",
}
POSITIONS = ("opening", "middle", "closing")
UNITS = ("words", "sentence", "paragraph")


@dataclass(frozen=True)
class FixRef:
    """One pattern a prompt version says it fixes: its kind and subject, lower case and trimmed
    (``corrected``: the corrected fragment of an ``edit``, the unit of a ``delete``, else '')."""

    kind: str
    subject: str
    corrected: str = ""

    def __str__(self) -> str:
        if self.kind == "edit":
            return f"edit: {self.subject} -> {self.corrected}"
        if self.kind == "delete":
            return f"delete: {self.subject} {self.corrected}"
        return f"{self.kind}: {self.subject}"


def parse_addresses(text: str) -> list[FixRef]:
    """The patterns ``addresses`` names, in order.

    ``addresses`` is a list separated by ``;``. An item ``KIND: SUBJECT`` whose kind (before the first
    ``:``, any case) is one of :data:`FIX_KINDS` names a pattern; every other item is prose (an issue
    number, a link) and names none. Kind and subject are compared trimmed of spaces and in lower case.
    Raises ``ValueError`` saying what is wrong with an item of a known kind that is malformed.
    """
    refs = []
    for item in text.split(";"):
        item = item.strip(" ")
        head, colon, body = item.partition(":")
        kind = head.strip(" ").lower()
        if not colon or kind not in FIX_KINDS:
            continue
        body = body.strip(" ").lower()
        if kind == "edit":
            parts = body.split("->")
            original, corrected = (parts[0].strip(" "), parts[1].strip(" ")) if len(parts) == 2 else ("", "")
            if not original or not corrected:
                raise ValueError(f"{item!r}: write an edit pattern as 'edit: ORIGINAL -> CORRECTED'")
            refs.append(FixRef(kind, original, corrected))
        elif kind == "delete":
            words = [w for w in body.split(" ") if w]
            if len(words) != 2 or words[0] not in POSITIONS or words[1] not in UNITS:
                raise ValueError(
                    f"{item!r}: write a deletion as 'delete: POSITION UNIT' with a position of "
                    f"{', '.join(POSITIONS)} and a unit of {', '.join(UNITS)}"
                )
            refs.append(FixRef(kind, words[0], words[1]))
        elif not body:
            raise ValueError(f"{item!r}: {FIX_KINDS[kind]}")
        else:
            refs.append(FixRef(kind, body))
    return refs


class PromptVersion(BaseModel):
    """One prompt version: its text, where it came from, the one change it made and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: VersionLabel = Field(description="The label interactions carry as prompt_version, e.g. 'v1.3'.")
    parent: VersionLabel | None = Field(None, description="The version this one changed (None: the first).")
    text: str = Field(min_length=1, description="The prompt template's full text.")
    change: str = Field(
        min_length=1,
        max_length=200,
        description="The ONE change against the parent, in one line: test one change at a time.",
    )
    reasoning: str = Field("", description="Why this change should help: the evidence behind it.")
    addresses: str = Field(
        "",
        description="What it fixes, ';'-separated: patterns as 'edit: A -> B', 'insert: X', "
        "'delete: closing paragraph', 'ticket: CATEGORY' (measured: time from feedback to fix), or prose.",
    )
    author: str = Field(min_length=1, description="Who made the change.")
    created_at: AwareDatetime = Field(description="When the version was created (it serves from then on).")

    @field_validator("addresses")
    @classmethod
    def _patterns_well_formed(cls, addresses: str) -> str:
        parse_addresses(addresses)
        return addresses

    @field_validator("change")
    @classmethod
    def _one_line(cls, change: str) -> str:
        if "\n" in change.strip():
            raise ValueError("describe one change in one line (test one change at a time)")
        return change.strip()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with the timestamp in RFC 3339 UTC."""
        data = self.model_dump()
        data["created_at"] = self.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return data


class PromptRegistry:
    """The versions of one registry file, oldest first. Changes are written with :meth:`save`."""

    def __init__(self, path: Path, versions: list[PromptVersion] | None = None) -> None:
        self.path = path
        self._versions: dict[str, PromptVersion] = {}
        for version in versions or []:
            self._check(version)
            self._versions[version.version] = version

    @classmethod
    def load(cls, path: Path) -> PromptRegistry:
        """The registry in ``path``; an empty one if the file does not exist yet."""
        if not path.exists():
            return cls(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FILE_FORMAT:
            raise RegistryError(f"{path} is not a prompt registry (format {FILE_FORMAT})")
        try:
            versions = [PromptVersion.model_validate(v) for v in raw.get("versions", [])]
        except ValueError as exc:
            raise RegistryError(f"{path}: {exc}") from exc
        return cls(path, sorted(versions, key=lambda v: (v.created_at, v.version)))

    def __iter__(self) -> Iterator[PromptVersion]:
        return iter(sorted(self._versions.values(), key=lambda v: (v.created_at, v.version)))

    def __len__(self) -> int:
        return len(self._versions)

    def __contains__(self, version: object) -> bool:
        return version in self._versions

    def get(self, version: str) -> PromptVersion:
        """The entry of ``version``; RegistryError if it is not registered."""
        try:
            return self._versions[version]
        except KeyError:
            raise RegistryError(f"prompt version {version!r} is not in {self.path}") from None

    def children(self, version: str) -> list[PromptVersion]:
        """The versions whose parent is ``version``, oldest first."""
        return [v for v in self if v.parent == version]

    def lineage(self, version: str) -> list[PromptVersion]:
        """``version`` and its ancestors, newest first."""
        chain = [self.get(version)]
        while chain[-1].parent is not None:
            chain.append(self.get(chain[-1].parent))
        return chain

    def add(self, version: PromptVersion) -> None:
        """Register a new version (RegistryError: label taken, unknown parent, older than its parent)."""
        if version.version in self._versions:
            raise RegistryError(f"prompt version {version.version!r} is already registered")
        self._check(version)
        self._versions[version.version] = version

    def _check(self, version: PromptVersion) -> None:
        if version.parent is None:
            return
        if version.parent == version.version:
            raise RegistryError(f"{version.version!r} cannot be its own parent")
        parent = self._versions.get(version.parent)
        if parent is None:
            raise RegistryError(
                f"parent {version.parent!r} of {version.version!r} is not registered: add it first"
            )
        if version.created_at < parent.created_at:
            raise RegistryError(f"{version.version!r} cannot be older than its parent {parent.version!r}")

    def save(self) -> None:
        """Write the file atomically (a crash leaves the old or the new file, never half of one)."""
        document = {"format": FILE_FORMAT, "versions": [v.to_json() for v in self]}
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


#: Columns of ``prompt_versions`` the mirror writes (``mirrored_at`` defaults to now).
MIRROR_COLUMNS = ("version", "parent", "text", "change", "reasoning", "addresses", "author", "created_at")


def mirror(registry: PromptRegistry, client: Client, database: str) -> int:
    """Make ``{database}.prompt_versions`` hold exactly the registry's versions; return how many.

    Rows are re-inserted (the table keeps the newest copy of each version) and versions no longer in
    the file are deleted, so the mirror follows hand edits of the file too. ``database`` must be a
    plain identifier (``ValueError`` otherwise)."""
    check_database_name(database)
    rows = [[getattr(v, c) for c in MIRROR_COLUMNS] for v in registry]
    if rows:
        client.insert(f"{database}.prompt_versions", rows, column_names=list(MIRROR_COLUMNS))
    current = client.query(f"SELECT DISTINCT version FROM {database}.prompt_versions").result_rows  # noqa: S608
    stale = sorted({row[0] for row in current} - {v.version for v in registry})
    if stale:
        client.command(
            f"DELETE FROM {database}.prompt_versions WHERE has(%(stale)s, version)",  # noqa: S608
            parameters={"stale": stale},
        )
    return len(rows)


def now() -> datetime:
    """The current time in UTC, at millisecond precision (what ClickHouse keeps)."""
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond - current.microsecond % 1000)
