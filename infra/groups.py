"""The names each stage gives its consumer groups and internal topics, under the topic namespace.

Kept here, beneath the stages, so the tools that watch a deployment (lag, readiness, the demo and
the benchmark) name the same groups as the stages without importing them.
"""

from __future__ import annotations

from infra.settings import Settings


def _namespaced(settings: Settings, name: str) -> str:
    ns = settings.kafka.topic_namespace
    return f"{ns}.{name}" if ns else name


def app_id(settings: Settings) -> str:
    """The processors' Faust app id: their consumer group and the prefix of their internal topics."""
    return _namespaced(settings, settings.pipeline.app_id)


def contributions_topic(settings: Settings) -> str:
    """The processors' internal topic of metric contributions, keyed by window."""
    return f"{app_id(settings)}-metric-contributions"


def sink_group_id(settings: Settings) -> str:
    """Consumer group of the sink."""
    return _namespaced(settings, f"{settings.pipeline.app_id}-clickhouse-sink")


def lease_group_id(settings: Settings) -> str:
    """Consumer group whose holder of partition 0 of the experiments topic is the active evaluator."""
    return _namespaced(settings, f"{settings.pipeline.app_id}-experiments")


def progress_group_id(settings: Settings) -> str:
    """Consumer group the evaluator commits its read offsets to (monitoring only; it always replays)."""
    return f"{lease_group_id(settings)}-progress"
