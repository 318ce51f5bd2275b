"""The sink backends by name, chosen with ``FEEDBACKLOOP_SINK__BACKEND``.

A backend is a module with a class (or function) that takes the :class:`~infra.settings.Settings`
and returns a :class:`~sinks.protocol.SinkBackend`. Adding one is that module plus one line here;
it is imported only when chosen, so its client library is needed only where it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from infra.settings import Settings
from sinks.protocol import SinkBackend

#: name -> "module:attribute" of the backend's factory.
BACKENDS: dict[str, str] = {
    "clickhouse": "sinks.clickhouse.backend:ClickHouseBackend",
}


class UnknownBackendError(ValueError):
    """The configured sink backend is not in :data:`BACKENDS`."""


def create_backend(settings: Settings) -> SinkBackend:
    """The backend ``settings.sink.backend`` names, built from ``settings`` (not yet opened)."""
    name = settings.sink.backend
    target = BACKENDS.get(name)
    if target is None:
        raise UnknownBackendError(
            f"sink backend {name!r} is not one of {sorted(BACKENDS)} (FEEDBACKLOOP_SINK__BACKEND)"
        )
    module, attribute = target.split(":")
    factory = cast(Callable[[Settings], SinkBackend], getattr(importlib.import_module(module), attribute))
    return factory(settings)
