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
"""

from __future__ import annotations

import faust
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP


class SnapshotFetchConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, fetching for a frozen copy of the active partitions."""

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        if active_partitions is None:  # a client-only app fetches everything
            return await super()._getmany(None, timeout)
        partitions = frozenset(active_partitions)
        if not partitions:  # empty means "all partitions" to aiokafka
            return {}
        return await super()._getmany(partitions, timeout)


class Transport(aiokafka_driver.Transport):
    Consumer = SnapshotFetchConsumer


class App(faust.App):
    """A faust app whose consumer uses `SnapshotFetchConsumer` (producers are unchanged)."""

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)
