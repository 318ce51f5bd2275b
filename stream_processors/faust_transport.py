"""Faust, with batch agents for the hot topics.

Profiled on this machine (2 cores), faust-streaming spent ~70-140 µs of CPU per message between
the fetch and the agent's loop body: ``_drain_messages`` wraps every message in
``wait_first(callback(message), ...)`` (two asyncio Tasks per message), then the conductor
decodes it, builds an Event, queues it on the topic's channel, the stream dequeues it, the
``take`` buffer collects it, and every event is acked one by one. That is more than the whole
pure processing of an event (see ``make bench``), and capped a no-op agent at ~3.4k events/s.

So the processors register their topics with Faust (for subscription, co-partitioned
assignment, table recovery and offset commits) but receive them as *batch agents*: the consumer
below hands each fetched batch of those topics to a handler in one call, tracks the messages as
in flight, and acks them when the handler returns. The handler runs shielded, so a rebalance
waits for the batch it interrupted (Faust's ``wait_empty`` waits for in-flight messages) instead
of cutting it in half. Other topics go through Faust's usual path, minus the per-message Tasks.

The consumer also flushes the pipeline's own output producer before committing offsets, so no
offset is committed before the outputs and state records it depends on are durable.

This is the one module that touches faust-streaming's private internals (``App._new_transport``,
``Consumer._drain_messages``, ``_commit_offsets``, ``_add_gap``, ``_read_offset``, ``_n_acked``,
``_commit_every``, mode's ``Service._stopped``). ``pyproject.toml`` pins faust-streaming to the
minor version they were read from, and ``tests/unit/test_faust_internals.py`` fails, saying what
to re-check here, when any of them moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

#: Called before offsets are committed; the pipeline sets it to its producer's flush.
BeforeCommit = Callable[[], Awaitable[None]]
#: Processes one batch of Faust messages of a topic; the messages are acked when it returns.
BatchHandler = Callable[[list[Any]], Awaitable[None]]


class FastConsumer(faust_aiokafka.Consumer):
    """aiokafka consumer that feeds batch agents and skips the per-message Tasks."""

    before_commit: BeforeCommit | None = None
    batch_handlers: Mapping[str, BatchHandler] = {}
    batch_max: int = 2000

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised end to end
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspended = self.suspend_flow.is_set
        handlers = self.batch_handlers
        track = self.track_message
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                ait = getmany(timeout=1.0)
                await sleep(0)
                if self.should_stop:
                    continue
                batches: dict[BatchHandler, list[Any]] = {}
                async for tp, message in ait:
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    handler = handlers.get(message.topic)
                    if handler is not None:
                        track(message)  # in flight: a rebalance waits until it is acked
                        batch = batches.setdefault(handler, [])
                        batch.append(message)
                        set_read_offset(tp, offset)
                        if len(batch) >= self.batch_max:
                            await self._run_batch(handler, batches.pop(handler))
                        continue
                    if suspended():
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    else:
                        await callback(message)
                    set_read_offset(tp, offset)
                for handler, batch in batches.items():
                    await self._run_batch(handler, batch)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    def handed_offset(self, tp: TP) -> int | None:
        """Offset of the last message of ``tp`` the fetcher handed over or, after a seek and until it
        hands one over, the committed position (the next offset to read); None: neither yet."""
        offset: int | None = self._read_offset.get(tp)  # .get: the defaultdict must not grow
        return offset

    async def _run_batch(self, handler: BatchHandler, messages: list[Any]) -> None:
        async def run() -> None:
            await handler(messages)
            for message in messages:
                self.ack(message)

        # Shielded: if the fetcher is stopped for a rebalance, the batch still completes and is acked.
        await asyncio.shield(asyncio.ensure_future(run()))

    async def _commit_offsets(self, offsets: Mapping[Any, int], start_new_transaction: bool = True) -> bool:
        if self.before_commit is not None:
            await self.before_commit()
        result: bool = await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        return result


class FastTransport(faust_aiokafka.Transport):
    """The aiokafka transport with :class:`FastConsumer`."""

    Consumer = FastConsumer


class FastApp(faust.App):
    """A Faust app whose consumer is :class:`FastConsumer`."""

    def _new_transport(self) -> Any:
        return FastTransport(self.conf.broker_consumer, self)
