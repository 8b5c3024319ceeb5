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
