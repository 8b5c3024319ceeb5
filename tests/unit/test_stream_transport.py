"""The stream worker's consumer asks for the records of a snapshot of its active partitions."""

from __future__ import annotations

import asyncio

from faust.types import TP

from streams.transport import SnapshotFetchConsumer

INTERACTIONS = TP("interactions", 0)
CHANGELOG = TP("user-sequences-changelog", 0)


class FakeThread:
    """The consumer thread: while it waits for records the main thread changes the live set
    (here: the changelog is paused), as faust does when a table's recovery ends."""

    def __init__(self, live: set):
        self.live = live
        self.asked = []

    async def getmany(self, active_partitions, timeout):
        self.live.clear()
        self.asked.append(active_partitions)
        # aiokafka returns every partition's records for an empty collection
        return {tp: ["record"] for tp in (active_partitions or (INTERACTIONS, CHANGELOG))}


def consumer_with(thread: FakeThread) -> SnapshotFetchConsumer:
    consumer = object.__new__(SnapshotFetchConsumer)  # no app, no Kafka: only _getmany runs
    consumer._thread = thread
    return consumer


def test_the_thread_gets_a_snapshot_that_later_pauses_do_not_empty():
    live = {CHANGELOG}
    thread = FakeThread(live)
    records = asyncio.run(consumer_with(thread)._getmany(live, timeout=1.0))
    assert thread.asked == [frozenset({CHANGELOG})]
    assert thread.asked[0] is not live
    assert set(records) == {CHANGELOG}  # never the paused source topic's records


def test_no_active_partition_fetches_nothing():
    thread = FakeThread(set())
    assert asyncio.run(consumer_with(thread)._getmany(set(), timeout=1.0)) == {}
    assert thread.asked == []


def test_a_client_only_app_still_fetches_every_partition():
    thread = FakeThread(set())
    records = asyncio.run(consumer_with(thread)._getmany(None, timeout=1.0))
    assert thread.asked == [None]
    assert set(records) == {INTERACTIONS, CHANGELOG}


def racing_consumer() -> SnapshotFetchConsumer:
    """A consumer with only what `wait_first` reads: mode's stop and crash events and
    faust's suspend_flow."""
    consumer = object.__new__(SnapshotFetchConsumer)
    consumer._loop = asyncio.get_running_loop()
    consumer._stopped, consumer._crashed = asyncio.Event(), asyncio.Event()
    consumer.suspend_flow = asyncio.Event()
    return consumer


def test_a_delivery_that_does_not_wait_is_run_in_place_without_a_task():
    async def run():
        consumer = racing_consumer()
        delivered = []

        async def deliver():
            delivered.append(asyncio.current_task())
            return "put"

        result = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        return result, delivered, asyncio.current_task()

    (done, results, stopped), delivered, caller = asyncio.run(run())
    assert results == ["put"] and not stopped and len(done) == 1
    assert delivered == [caller]  # ran inside the caller's own task: no task was made


def test_a_delivery_that_waits_finishes_when_the_buffer_has_room():
    async def run():
        consumer = racing_consumer()
        room = asyncio.get_running_loop().create_future()
        steps = []

        async def deliver():
            steps.append("full")
            await room  # the stream's buffer is full
            await asyncio.sleep(0)
            steps.append("put")
            return "put"

        asyncio.get_running_loop().call_later(0.05, room.set_result, None)
        return await consumer.wait_first(deliver(), consumer.suspend_flow.wait()), steps

    (_, results, stopped), steps = asyncio.run(run())
    assert steps == ["full", "put"] and results == ["put"] and not stopped


def test_a_waiting_delivery_is_abandoned_and_cleans_up_when_flow_is_suspended():
    """A rebalance (suspend_flow) ends the race, as in faust: the delivery is cancelled."""

    async def run():
        consumer = racing_consumer()
        never = asyncio.get_running_loop().create_future()
        cleaned = []

        async def deliver():
            try:
                await never
            finally:
                cleaned.append(True)

        asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)
        result = await asyncio.wait_for(
            consumer.wait_first(deliver(), consumer.suspend_flow.wait()), 5
        )
        await asyncio.sleep(0)
        return result, cleaned

    (done, _, _), cleaned = asyncio.run(run())
    assert len(done) == 1 and cleaned == [True]  # suspend_flow won; deliver was cancelled
