"""A Faust transport whose consumer hands messages to the streams without a Task per message.

faust-streaming's ``Consumer._drain_messages`` wraps every message in
``wait_first(callback(message), suspend_flow.wait())``, which creates two asyncio Tasks per
message; profiled here, that was most of the ~100 µs of CPU a message cost and capped a no-op
agent at ~3.4k messages/s. The loop below is the same loop, except that it awaits the callback
directly while the flow is not suspended (the callback only waits when the stream buffer is
full; during a rebalance the fetcher task is stopped, which cancels that wait). The consumer
also flushes the pipeline's own output producer before committing offsets, so nothing is
committed before the outputs and state records it depends on are durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

#: Called before offsets are committed; the pipeline sets it to its producer's flush.
BeforeCommit = Callable[[], Awaitable[None]]


class FastConsumer(faust_aiokafka.Consumer):
    """aiokafka consumer with the per-message Task removed from the drain loop."""

    before_commit: BeforeCommit | None = None

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
        sleep = asyncio.sleep
        yield_every = 1000
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                ait = getmany(timeout=1.0)
                await sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in ait:
                    since_yield += 1
                    if since_yield > yield_every:
                        await sleep(0)
                        since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if suspended():
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await callback(message)
                        set_read_offset(tp, offset)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _commit_offsets(self, offsets: Mapping[Any, int], start_new_transaction: bool = True) -> bool:
        if self.before_commit is not None:
            await self.before_commit()
        result: bool = await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        return result


class FastTransport(faust_aiokafka.Transport):
    """The aiokafka transport with :class:`FastConsumer`."""

    Consumer = FastConsumer
