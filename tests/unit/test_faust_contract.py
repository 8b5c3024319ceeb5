"""The faust, aiokafka and mode internals that the stream plane relies on, pinned.

streams/transport.py overrides private faust methods (`Consumer._getmany`,
`App._new_transport`) and re-types faust's producer buffer; streams/app.py
passes settings that faust ignores silently when they are misspelt. A faust or
aiokafka release that moves any of these fails here, naming what changed,
rather than in a worker that stalls or floods the terminal.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import faust
import pytest
from aiokafka.consumer.fetcher import Fetcher
from faust.tables.base import Collection
from faust.transport import base as transport_base
from faust.transport import conductor
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from faust.types.tuples import Message
from faust.web.base import Web
from prometheus_client import REGISTRY

from streamrec.settings import Settings
from streams import transport
from streams.topics import changelog_topic_names

STREAMS = Path(transport.__file__).parent


def params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def expect_params(function, expected: list[str], why: str) -> None:
    found = params(function)
    assert found[: len(expected)] == expected, (
        f"faust internal changed: {function.__qualname__}{inspect.signature(function)}; "
        f"streams/ expects the parameters {expected} because {why}"
    )


def test_the_app_builds_its_transport_through_new_transport():
    expect_params(faust.App._new_transport, ["self"], "streams.transport.App overrides it")
    app = transport.App("contract-test", broker="kafka://127.0.0.1:1", store="memory://")
    assert isinstance(app.transport, transport.Transport), (
        "faust internal changed: App.transport no longer comes from App._new_transport()"
    )
    assert [str(url) for url in app.conf.broker_consumer] == ["kafka://127.0.0.1:1"], (
        "faust internal changed: App.conf.broker_consumer (passed to the Transport) moved"
    )
    expect_params(
        transport_base.Transport.__init__, ["self", "url", "app"], "App._new_transport calls it"
    )
    # The transport's Consumer and Producer class attributes are what faust instantiates.
    assert type(app.consumer) is transport.SnapshotFetchConsumer, (
        "faust internal changed: Transport.Consumer is no longer the consumer class used"
    )
    assert type(app.producer) is transport.QuietProducer, (
        "faust internal changed: Transport.Producer is no longer the producer class used"
    )
    assert type(app.producer.buffer) is transport.DrainingProducerBuffer, (
        "faust internal changed: Producer.__init__ no longer sets self.buffer"
    )


def test_getmany_is_called_and_delegated_as_the_override_expects():
    ours = ["self", "active_partitions", "timeout"]
    why = "faust calls self._getmany(active_partitions=..., timeout=...) by keyword"
    assert params(transport.SnapshotFetchConsumer._getmany) == ours
    expect_params(faust_consumer.Consumer._getmany, ours, why)
    expect_params(faust_consumer.ThreadDelegateConsumer._getmany, ours, why)
    assert issubclass(aiokafka_driver.Consumer, faust_consumer.ThreadDelegateConsumer), (
        "faust internal changed: the aiokafka Consumer no longer delegates to a thread"
    )
    # tests/unit/test_stream_transport.py hands the consumer a fake `_thread`.
    assert "_thread" in inspect.get_annotations(faust_consumer.ThreadDelegateConsumer), (
        "faust internal changed: ThreadDelegateConsumer._thread"
    )
    expect_params(
        aiokafka_driver.AIOKafkaConsumerThread.getmany,
        ["self", "active_partitions", "timeout"],
        "ThreadDelegateConsumer._getmany passes the snapshot to it",
    )
    # The live set that the snapshot protects against is faust's own, mutated in place.
    assert callable(faust_consumer.Consumer._get_active_partitions), (
        "faust internal changed: Consumer._get_active_partitions"
    )


def test_aiokafka_still_reads_an_empty_partition_set_as_every_partition():
    """Why the override answers an empty snapshot itself instead of passing it on."""
    expect_params(
        aiokafka_driver.AIOKafkaConsumerThread._fetch_records,
        ["self", "consumer", "active_partitions"],
        "it hands the snapshot to aiokafka's Fetcher.fetched_records",
    )
    expect_params(
        Fetcher.fetched_records, ["self", "partitions", "timeout", "max_records"], "faust calls it"
    )
    source = inspect.getsource(Fetcher.fetched_records)
    assert "if partitions and tp not in partitions" in source, (
        "aiokafka internal changed: Fetcher.fetched_records no longer treats an empty "
        "partition set as 'every partition'; review SnapshotFetchConsumer._getmany"
    )


def test_the_producer_buffer_has_what_the_quiet_wait_uses():
    buffer = faust_producer.ProducerBuffer
    assert asyncio.iscoroutinefunction(buffer.wait_until_ebb)
    expect_params(buffer.wait_until_ebb, ["self"], "DrainingProducerBuffer overrides it")
    expect_params(buffer.flush_atmost, ["self", "max_messages"], "DrainingProducerBuffer calls it")
    assert isinstance(buffer.max_messages, int), "faust internal changed: max_messages"
    assert isinstance(inspect.getattr_static(buffer, "size"), property), (
        "faust internal changed: ProducerBuffer.size"
    )
    # Re-typing the instance (`__class__ =`) is only sound while neither class has slots.
    assert "__slots__" not in vars(buffer)
    assert "__slots__" not in vars(transport.DrainingProducerBuffer)
    # The conductor looks the wait up on the producer's buffer instance.
    assert "producer.buffer.wait_until_ebb" in inspect.getsource(conductor), (
        "faust internal changed: the conductor no longer waits on producer.buffer.wait_until_ebb"
    )


def test_a_wait_for_the_producer_buffer_is_counted_and_not_a_warning(caplog):
    app = transport.App("contract-test", broker="kafka://127.0.0.1:1", store="memory://")
    buffer = app.producer.buffer
    buffer.max_messages = -1  # an empty buffer counts as full: the wait returns at once
    name = "streamrec_stream_producer_buffer_waits_total"
    before = REGISTRY.get_sample_value(name) or 0.0
    with caplog.at_level(logging.DEBUG):
        asyncio.run(buffer.wait_until_ebb())
    assert REGISTRY.get_sample_value(name) == before + 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("waiting for it to drain" in r.getMessage() for r in caplog.records)


def _app_keywords() -> list[str]:
    """The keyword arguments streams/app.py passes to App(...)."""
    tree = ast.parse((STREAMS / "app.py").read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "App"
    ]
    assert len(calls) == 1, "streams/app.py should build its App once"
    return [keyword.arg for keyword in calls[0].keywords]


def test_every_setting_streams_app_passes_is_one_faust_knows():
    keywords = _app_keywords()
    assert "broker" in keywords
    ours = params(transport.App.__init__)  # what streams.transport.App takes itself
    unknown = [name for name in keywords if not hasattr(faust.Settings, name) and name not in ours]
    assert not unknown, f"faust ignores settings it does not know; gone or renamed: {unknown}"


@pytest.mark.parametrize(
    ("function", "expected", "why"),
    [
        (faust.Stream.take_events, ["self", "max_", "within"], "the agents batch with it"),
        (
            Collection.send_changelog,
            ["self", "partition", "key", "value"],
            "streams.app._table_set writes a table key from inside a batch",
        ),
        (faust.App.Table, ["self", "name"], "streams/app.py declares its tables"),
        (faust.App.topic, ["self", "topics"], "streams/app.py declares its topics"),
        (faust.App.agent, ["self", "channel"], "streams/app.py declares its agents"),
        (faust.App.page, ["self", "path"], "streams/app.py serves /metrics and /health"),
        (faust.Topic.send_soon, ["self"], "the agents buffer their sends"),
        (
            aiokafka_driver.Producer.send,
            ["self", "topic", "key", "value", "partition", "timestamp", "headers"],
            "streams.outbox.Outbox.flush hands a batch's messages to the producer",
        ),
        (Web.bytes, ["self", "value"], "/metrics answers with it"),
        (Web.json, ["self", "value"], "/health answers with it"),
        (faust.Worker.__init__, ["self", "app"], "`streamrec stream worker` runs the app"),
        (
            faust.App.create_event,
            ["self", "key", "value", "headers", "message"],
            "streams.transport.App overrides it",
        ),
    ],
)
def test_the_faust_api_streams_app_calls(function, expected, why):
    expect_params(function, expected, why)


def test_the_keywords_streams_app_passes_exist():
    wanted = {
        faust.App.topic: ["key_type", "value_type", "key_serializer", "value_serializer"],
        faust.App.Table: ["default", "partitions"],
        faust.Topic.send_soon: ["key", "value", "partition"],
        Web.bytes: ["headers"],
        faust.Worker.__init__: ["loglevel", "quiet"],
    }
    for function, names in wanted.items():
        signature = inspect.signature(function)
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        missing = [n for n in names if n not in signature.parameters and not takes_any]
        assert not missing, f"faust internal changed: {function.__qualname__} lost {missing}"
    assert callable(faust.Worker.execute_from_commandline)
    assert inspect.isdatadescriptor(inspect.getattr_static(Collection, "data")), (
        "faust internal changed: Table.data (streams.app._table_set writes to it)"
    )


def test_a_table_of_bytes_logs_and_recovers_raw_bytes():
    """streams.outbox writes the sequences' changelog itself, as raw bytes: faust must
    read them back the same way on recovery."""
    table = faust.App("contract-bytes").Table("t", key_type=bytes, value_type=bytes)
    assert (table.key_serializer, table.value_serializer) == ("raw", "raw"), (
        "faust internal changed: a table's serializers no longer follow key_type/value_type"
    )


def test_the_message_fields_streams_app_reads():
    read = {"key", "value", "topic", "partition", "offset", "tp"}
    missing = read - set(Message.__slots__)
    assert not missing, f"faust internal changed: Message lost {sorted(missing)}"
    assert callable(aiokafka_driver.Consumer.highwater), "streams.app._track_lag calls it"


def test_the_changelog_topics_ensure_topics_creates_are_the_ones_faust_uses(tmp_path):
    """streams.app builds its App at import, with settings: a fresh interpreter reads them."""
    script = (
        "import json; from streams import app; print(json.dumps(sorted("
        "[t.changelog_topic.get_topic_name(), t._changelog_compacting] "
        "for t in app.app.tables.values())))"
    )
    environment = dict(
        os.environ,
        STREAMREC_DATA_DIR=str(tmp_path),
        STREAMREC_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1",  # never connected to
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr
    settings = Settings(data_dir=tmp_path)
    expected = [[name, True] for name in sorted(changelog_topic_names(settings))]
    assert json.loads(result.stdout) == expected, (
        "faust internal changed: a table's changelog topic is no longer the compacted "
        "'<app id>-<table>-changelog', or streams/app.py's tables are not streams.topics.TABLES"
    )


def test_faust_delivers_each_message_through_the_race_the_consumer_shortens():
    """SnapshotFetchConsumer.wait_first runs the first coroutine in place; that is only
    right while faust's only caller races a delivery against `suspend_flow`."""
    source = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert (
        "await self.wait_first(\n" in source
        and "callback(message), self.suspend_flow.wait()" in (source)
    ), "faust internal changed: how _drain_messages delivers a message; review wait_first"
    callers = [
        name
        for name, member in inspect.getmembers(faust_consumer.Consumer, inspect.isfunction)
        if "wait_first(" in inspect.getsource(member)
        and member.__module__ == faust_consumer.__name__
    ]
    assert callers == ["_drain_messages"], f"faust internal changed: wait_first called by {callers}"


def test_the_monitor_keeps_what_fausts_stall_check_reads():
    """BatchMonitor drops faust's per-event statistics but must keep
    `stream_inbound_time`, which the aiokafka consumer's stall check reads per partition."""
    assert hasattr(faust.Settings, "Monitor"), "faust internal changed: the Monitor setting"
    check = inspect.getsource(aiokafka_driver.AIOKafkaConsumerThread.verify_event_path)
    assert "monitor.stream_inbound_time.get(tp)" in check, (
        "faust internal changed: what verify_event_path reads from the monitor"
    )
    app = transport.App("contract-monitor", broker="kafka://127.0.0.1:1", store="memory://")
    assert isinstance(app.monitor, transport.BatchMonitor)
    tp = TP("interactions", 3)
    assert app.monitor.on_stream_event_in(tp, 7, object(), object()) is None
    assert tp in app.monitor.stream_inbound_time and app.monitor.events_total == 1


def test_the_app_builds_events_as_faust_does():
    assert "self.conf.Event(self, key, value, headers, message)" in inspect.getsource(
        faust.App.create_event
    ), "faust internal changed: App.create_event; review streams.transport.App.create_event"
    app = transport.App("contract-events", broker="kafka://127.0.0.1:1", store="memory://")
    message = Message("interactions", 0, 5, 0.0, 0, None, b"k", b"v", None)
    event = app.create_event(b"k", b"v", {}, message)
    assert isinstance(event, app.conf.Event) and event.value == b"v" and event.message is message


def test_the_worker_consumer_is_made_where_the_fetch_wait_is_set():
    """PromptFetchThread sets `_fetch_max_wait_ms` on the consumer faust builds, before
    aiokafka's start() hands it to its Fetcher."""
    expect_params(
        aiokafka_driver.AIOKafkaConsumerThread._create_worker_consumer,
        ["self", "transport"],
        "PromptFetchThread overrides it",
    )
    expect_params(aiokafka_driver.Consumer._new_consumer_thread, ["self"], "overridden")
    import aiokafka

    start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start, (
        "aiokafka internal changed: where the consumer's fetch wait reaches its Fetcher"
    )
    app = transport.App(
        "contract-fetch", broker="kafka://127.0.0.1:1", store="memory://", fetch_max_wait_ms=40
    )
    thread = app.consumer._thread
    assert isinstance(thread, transport.PromptFetchThread)

    async def build():  # aiokafka's consumer wants a running loop
        return thread._create_worker_consumer(app.transport)._fetch_max_wait_ms

    assert asyncio.run(build()) == 40
