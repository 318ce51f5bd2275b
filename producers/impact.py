"""Closing the loop with users: how many corrections a user gave, and whom they helped.

Applications call :func:`fetch_impact` to show a user what their feedback did, e.g. "You've
provided 23 corrections that improved the product" and "your feedback helped improve this
feature for 10,000 users". The numbers come from the ClickHouse view ``user_contributions``:

* ``corrections``: the user's explicit corrective feedback (edits, regenerations, thumbs-down);
* ``informing_corrections``: those made on a prompt version before a newer version was derived
  from it (the prompt registry's parent links) — corrections that informed an improvement;
* ``users_served``: distinct users whose interactions were answered by the versions those
  corrections informed.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from infra.settings import check_database_name


@dataclass(frozen=True)
class UserImpact:
    """One user's contribution and its reach."""

    user_id: str
    corrections: int
    edits: int
    regenerations: int
    thumbs_down: int
    informing_corrections: int
    informed_versions: tuple[str, ...]
    users_served: int
    interactions_served: int

    def messages(self) -> list[str]:
        """Sentences an app can show the user (empty when there is nothing to thank them for yet)."""
        said = []
        if self.informing_corrections:
            n = self.informing_corrections
            said.append(f"You've provided {n:,} correction{'s' if n != 1 else ''} that improved the product.")
        elif self.corrections:
            plural = "s" if self.corrections != 1 else ""
            said.append(f"You've provided {self.corrections:,} correction{plural}: thank you, we're on it.")
        if self.users_served:
            plural = "s" if self.users_served != 1 else ""
            said.append(f"Your feedback helped improve this feature for {self.users_served:,} user{plural}.")
        return said


_COLUMNS = (
    "user_id",
    "corrections",
    "edits",
    "regenerations",
    "thumbs_down",
    "informing_corrections",
    "informed_versions",
    "users_served",
    "interactions_served",
)


def fetch_impact(client: Client, database: str, user_id: str) -> UserImpact:
    """The contribution of ``user_id`` as ``{database}.user_contributions`` has it (all zero for a
    user without corrections). ``client`` is any clickhouse-connect client of the analytics store;
    ``database`` must be a plain identifier (``ValueError`` otherwise): it is put into the SQL."""
    check_database_name(database)
    columns = ", ".join(_COLUMNS)
    result = client.query(
        f"SELECT {columns} FROM {database}.user_contributions WHERE user_id = %(user)s",  # noqa: S608
        parameters={"user": user_id},
    )
    if not result.result_rows:
        return UserImpact(user_id, 0, 0, 0, 0, 0, (), 0, 0)
    row = dict(zip(_COLUMNS, result.result_rows[0], strict=True))
    return UserImpact(
        user_id=str(row["user_id"]),
        corrections=int(row["corrections"]),
        edits=int(row["edits"]),
        regenerations=int(row["regenerations"]),
        thumbs_down=int(row["thumbs_down"]),
        informing_corrections=int(row["informing_corrections"]),
        informed_versions=tuple(row["informed_versions"]),
        users_served=int(row["users_served"]),
        interactions_served=int(row["interactions_served"]),
    )


__all__ = ["UserImpact", "fetch_impact"]
