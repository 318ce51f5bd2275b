"""The sink stage: output topics -> a backend (ClickHouse first), batched, exact under outages.

``sinks.runner.Sink`` is the consumer loop; a backend implements ``sinks.protocol.SinkBackend`` and is
named in ``sinks.registry.BACKENDS``.
"""

from sinks.protocol import Fault, SinkBackend, TableWriter
from sinks.registry import BACKENDS, create_backend

__all__ = ["BACKENDS", "Fault", "SinkBackend", "TableWriter", "create_backend"]
