"""Outcome values for tests that build outcomes, contributions or window members by hand."""

from __future__ import annotations

import types
import typing
from typing import Any

from schemas.signals import SIGNALS, Signal


def neutral(signal: Signal) -> Any:
    """What a signal is when nothing happened: false, null, or 0 for a number that cannot be null."""
    if signal.annotation is bool:
        return False
    args = typing.get_args(signal.annotation)
    if typing.get_origin(signal.annotation) in (typing.Union, types.UnionType) and type(None) in args:
        return None
    return 0


def neutral_signals(signals: tuple[Signal, ...] = SIGNALS) -> dict[str, Any]:
    """Every declared signal at its neutral value, so a hand-built outcome stays valid when a signal
    is added: ``InteractionOutcome.model_validate({**facts, **neutral_signals(), "regenerated": True})``."""
    return {s.name: neutral(s) for s in signals}
