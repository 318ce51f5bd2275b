"""The assignment check: are users logged in the arm the consistent hash of the experiment record gives? Pure.

The experiment record is the one source of the split (:func:`schemas.assignment.experiment_variants`), and
the hash is deterministic, so every user's variant can be recomputed. A user logged in another arm means
an app that hard-codes another split or other variant names, forces users into an arm, or mislabels
interactions -- none of which the sample-ratio check sees when the counts happen to fit.
"""

from __future__ import annotations

from collections.abc import Mapping

from experiments.decision import AssignmentCounts
from experiments.stats import ArmAccumulator
from schemas.assignment import bucket_of, cut_points, variant_of_bucket


class AssignmentAudit:
    """Counts an experiment's (user, logged variant) pairs and those the hash puts elsewhere.

    Kept up to date as users join and leave arms (:meth:`joined`, :meth:`left`); :meth:`configure` with
    the experiment's variants recounts from the arms, so the counts at any moment depend only on who is
    in which arm and on the record -- not on when the record was read.
    """

    __slots__ = ("_cuts", "_experiment_id", "mismatched", "users")

    def __init__(self, experiment_id: str) -> None:
        self._experiment_id = experiment_id
        self._cuts: list[tuple[int, str]] | None = None
        self.users = 0
        self.mismatched = 0

    def _misplaced(self, variant: str, user_id: str) -> bool:
        assert self._cuts is not None
        return variant_of_bucket(bucket_of(self._experiment_id, user_id), self._cuts) != variant

    def configure(self, variants: Mapping[str, int], arms: Mapping[str, ArmAccumulator]) -> None:
        """Check against these variants (name -> weight, in order) from now on, recounting ``arms``."""
        cuts = cut_points(variants)
        if cuts == self._cuts:
            return
        self._cuts = cuts
        self.mismatched = sum(
            self._misplaced(variant, user) for variant, arm in arms.items() for user in arm.users()
        )

    def joined(self, variant: str, user_id: str) -> None:
        """``user_id`` has their first counted interaction in ``variant``."""
        self.users += 1
        if self._cuts is not None and self._misplaced(variant, user_id):
            self.mismatched += 1

    def left(self, variant: str, user_id: str) -> None:
        """``user_id`` has no counted interaction in ``variant`` any more (an amendment moved it)."""
        self.users -= 1
        if self._cuts is not None and self._misplaced(variant, user_id):
            self.mismatched -= 1

    def counts(self) -> AssignmentCounts | None:
        """The counts, or None before the experiment's variants are known."""
        return None if self._cuts is None else AssignmentCounts(self.users, self.mismatched)


__all__ = ["AssignmentAudit"]
