"""What a batch sends to Kafka, handed to the producer at once and awaited before the
batch is acknowledged.

faust's `send_soon` (and `table[key] = value`, which uses it) puts each message in
faust's producer buffer, which a background task hands to the producer one message
and one event-loop turn at a time; while the buffer holds more than 100 the stream
waits, flushing message by message. For a batch that updates thousands of user
sequences, that per-message trip cost more than everything else the worker does.
Here a batch's changelog writes and training examples go to the producer in one
pass, and the batch waits until the broker has acknowledged all of them: its offsets
are committed only after that, as they are only after its rows are stored.
"""

from __future__ import annotations

import asyncio

import faust


class Outbox:
    """One batch's messages: table changelog writes and messages to topics, as bytes."""

    def __init__(self, app: faust.App):
        self.app = app
        self.messages: list[tuple[str, bytes | None, bytes, int | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        self.messages.append((topic, key, value, partition))

    def table_set(self, table: faust.Table, partition: int, key: bytes, value: bytes) -> None:
        """Set a key of a table whose keys and values are raw bytes, and log it to the
        table's changelog partition (the key's source partition: tables are
        co-partitioned with their source topics)."""
        table.data[key] = value
        self.send(table.changelog_topic.get_topic_name(), key, value, partition)

    async def flush(self) -> None:
        """Hand every message to the producer, then wait until the broker has them."""
        send = self.app.producer.send
        pending = [
            await send(topic, key, value, partition, None, None)
            for topic, key, value, partition in self.messages
        ]
        self.messages = []
        await asyncio.gather(*pending)
