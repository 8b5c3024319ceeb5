"""faust's Kafka transport, with the fetch of a consumer's records made race-free.

faust's consumer asks its consumer thread for the records of the partitions it
has not paused, passing its own set of active partitions: the live set, which
the main thread keeps changing while the thread waits for records (faust
pauses every partition when it is assigned, resumes the changelogs for the
table recovery, pauses them again, then resumes the source topics). aiokafka
reads that set when the thread gets to the request and again each time records
arrive while it waits, and an empty collection means "every partition" to it.
So when the changelogs have just been paused and the source partitions not yet
resumed, a fetch in flight hands over the source topics' records; faust then
drops them, since their partitions are not active, and aiokafka's position has
moved past them. A partition with a committed offset gets them back (faust
seeks to the committed offsets once recovery is over), but a partition never
committed is not sought: its records were never delivered, and the worker sits
idle until new ones arrive. That is what a worker restarted after a crash
before its first commit did.

The consumer here hands the thread a snapshot of the active partitions taken
when it asks, so a fetch returns only records that faust will deliver.

Its fetch waits at most `fetch_max_wait_ms` at the broker (faust fixes 1,500 ms).
aiokafka keeps one fetch in flight per broker, for the partitions it holds no
records of; when every busy partition still has records buffered, that fetch asks
only for quiet ones and waits out its maximum, and the busy partitions are fetched
again only after it. That wait was most of an event's time from send to stored.

It also delivers a message without mode's race when it can. faust hands every
message to its stream through `wait_first(deliver, suspend_flow.wait())`, so that
a rebalance can abandon a delivery stuck on a full buffer; mode's `wait_first`
makes four tasks and an `asyncio.wait` for that, per message, which was a quarter
of the worker's CPU. A delivery almost never waits (the stream's buffer has room),
so it is first run in place; one that has to wait finishes under the same race.

The producer here reports its backpressure quietly: messages sent from inside
a stream (table changelogs, `send_soon`) wait in faust's producer buffer, and
while it holds more than `max_messages` the stream waits for it to drain. That
is flow control doing its work on every large batch, yet faust logs each wait
as a WARNING; here it is counted and logged at DEBUG.

The app's monitor keeps none of faust's per-event statistics (nothing here reads
them; the worker's metrics are Prometheus counters per batch), only the time each
partition last fed a stream, which faust's stall check reads. Its bookkeeping
per event (a weak-keyed lookup and two counters keyed by name) was a tenth of
the worker's CPU.

tests/unit/test_faust_contract.py pins every faust internal this module uses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from functools import cached_property
from time import monotonic

import faust
from faust.sensors import Monitor
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from mode.services import WaitResults
from prometheus_client import Counter

log = logging.getLogger(__name__)

PRODUCER_WAITS = Counter(
    "streamrec_stream_producer_buffer_waits_total",
    "Times the stream waited for faust's producer buffer to drain (backpressure)",
)


class PromptFetchThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's consumer thread, whose fetches wait `app.fetch_max_wait_ms` at most."""

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms
        return consumer


class SnapshotFetchConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, fetching for a frozen copy of the active partitions
    from a `PromptFetchThread`."""

    def _new_consumer_thread(self) -> PromptFetchThread:
        return PromptFetchThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        if active_partitions is None:  # a client-only app fetches everything
            return await super()._getmany(None, timeout)
        partitions = frozenset(active_partitions)
        if not partitions:  # empty means "all partitions" to aiokafka
            return {}
        return await super()._getmany(partitions, timeout)

    async def wait_first(self, *coros, timeout=None) -> WaitResults:
        """faust's per-message `wait_first(deliver, self.suspend_flow.wait())`, with
        `deliver` run in place first: if it finishes without waiting, that is the race's
        outcome, and no task is made."""
        if len(coros) != 2 or timeout is not None or not inspect.iscoroutine(coros[0]):
            return await super().wait_first(*coros, timeout=timeout)
        deliver, suspended = coros
        if self.suspend_flow.is_set():
            return await super().wait_first(deliver, suspended)
        try:
            waiting_on = deliver.send(None)
        except StopIteration as finished:
            suspended.close()
            return WaitResults([deliver], [finished.value], False)
        except BaseException:
            suspended.close()
            raise
        return await super().wait_first(_resumed(deliver, waiting_on), suspended)


async def _resumed(coroutine, waiting_on):
    """Go on with a coroutine that was started by hand and is waiting on `waiting_on`
    (a future, or None for a bare yield), as an asyncio task would have."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait([waiting_on])
        except BaseException as error:  # cancelled while it waited: it cleans up
            try:
                waiting_on = coroutine.throw(error)
            except StopIteration as finished:
                return finished.value
            continue
        try:
            waiting_on = coroutine.send(None)
        except StopIteration as finished:
            return finished.value


class DrainingProducerBuffer(ProducerBuffer):
    """faust's producer buffer, whose waits for a drain are a metric, not a warning."""

    async def wait_until_ebb(self) -> None:
        if self.size > self.max_messages:
            PRODUCER_WAITS.inc()
            log.debug("producer buffer holds %d messages: waiting for it to drain", self.size)
            await self.flush_atmost(self.max_messages)


class QuietProducer(aiokafka_driver.Producer):
    """faust's aiokafka producer with a `DrainingProducerBuffer`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # faust builds the buffer inside __init__ with no hook for its class; the
        # subclass only changes how a wait is reported, so the instance is re-typed.
        self.buffer.__class__ = DrainingProducerBuffer


class Transport(aiokafka_driver.Transport):
    Consumer = SnapshotFetchConsumer
    Producer = QuietProducer


class BatchMonitor(Monitor):
    """faust's Monitor, keeping per event only what faust's consumer reads."""

    def on_stream_event_in(self, tp: TP, offset: int, stream, event) -> None:
        self.events_total += 1
        self.stream_inbound_time[tp] = monotonic()
        return None


class App(faust.App):
    """A faust app whose consumer is a `SnapshotFetchConsumer`, producer a `QuietProducer`
    and monitor a `BatchMonitor`, and which builds its events without a settings lookup."""

    def __init__(self, *args, fetch_max_wait_ms: int = 50, **kwargs) -> None:
        kwargs.setdefault("Monitor", BatchMonitor)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def create_event(self, key, value, headers, message):
        """faust's, without looking the Event class up in the settings for every message."""
        return self._event_class(self, key, value, headers, message)

    @cached_property
    def _event_class(self):
        return self.conf.Event

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)
