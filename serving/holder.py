"""The model a servicer serves: a registry version that loaded and passed its smoke check.

A version is served only once it loads and its family's smoke check passes
(scores finite, the index answers). One that fails is marked failed in the
registry (`ModelRegistry.mark_failed`, read by `ModelRegistry.failed`, the ops
page and `streamrec status`) and never tried again; the holder goes on to the
next newest version, so a restarted server falls back to the newest version
that works instead of serving nothing. New versions are announced on
`model-updates` or found by polling. Listeners (the server's health service)
hear when a model is first served.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import grpc
from prometheus_client import Counter, Gauge

from streamrec.registry import ModelRegistry, ModelVersion
from streamrec.settings import Settings

log = logging.getLogger(__name__)

MODEL_VERSION = Gauge(
    "streamrec_serving_model_version", "Number of the model version being served", ["family"]
)
RELOADS = Counter(
    "streamrec_serving_reloads_total", "Model reloads by outcome", ["family", "outcome"]
)
# How much of a failure's text the registry keeps.
REASON_CHARS = 500

M = TypeVar("M")


class SmokeCheckFailed(RuntimeError):
    """A loaded version that answers wrongly (scores not finite, an index that finds nothing)."""


class ModelHolder(Generic[M]):
    """The model a servicer serves now, swapped for a newer registry version when one appears.

    A request takes `holder.current` once and uses that object to the end, so a
    swap never changes a model under a request in flight; the old one is freed
    when its last request finishes. Loading and the smoke check run in a thread,
    off the event loop.
    """

    def __init__(
        self,
        settings: Settings,
        family: str,
        load: Callable[[ModelVersion], M],
        smoke: Callable[[M], None] | None = None,
    ):
        self.settings = settings
        self.family = family
        self.registry = ModelRegistry.from_settings(settings)
        self._load = load
        self._smoke = smoke
        self.current: M | None = None
        self.version: ModelVersion | None = None
        # Awaited after each swap (the server sets the health of the holder's service).
        self.listeners: list[Callable[[], Awaitable[None]]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._stop_consumer = threading.Event()
        # Set once announcements are heard (tests wait for it before publishing).
        self.listening = threading.Event()
        self._consumer_thread: threading.Thread | None = None

    def _candidates(self) -> list[ModelVersion]:
        """Versions newer than the served one and not marked failed, newest first."""
        served = self.version.number if self.version else 0
        failed = {entry.version for entry in self.registry.failed(self.family)}
        return [
            version
            for version in reversed(self.registry.versions(self.family))
            if version.number > served and version.version not in failed
        ]

    def _load_checked(self, version: ModelVersion) -> M:
        loaded = self._load(version)
        if self._smoke is not None:
            self._smoke(loaded)
        return loaded

    async def refresh(self) -> bool:
        """Serve the newest version newer than the served one that loads and passes the
        smoke check, marking those that fail; True if swapped."""
        async with self._lock:
            for version in await asyncio.to_thread(self._candidates):
                try:
                    loaded = await asyncio.to_thread(self._load_checked, version)
                except Exception as error:
                    RELOADS.labels(self.family, "failed").inc()
                    reason = f"{type(error).__name__}: {error}"[:REASON_CHARS]
                    log.error("%s/%s refused, marked failed: %s", *_name(version), reason)
                    await asyncio.to_thread(
                        self.registry.mark_failed, self.family, version.version, reason
                    )
                    continue
                await self._swap(loaded, version)
                return True
            return False

    async def _swap(self, loaded: M, version: ModelVersion) -> None:
        self.current, self.version = loaded, version
        MODEL_VERSION.labels(self.family).set(version.number)
        RELOADS.labels(self.family, "swapped").inc()
        log.info("serving %s/%s", *_name(version))
        for listener in self.listeners:
            await listener()

    async def start_optional(self) -> None:
        """Load the latest version and watch, for a family that may have none yet: its
        service answers once one is published."""
        await self.refresh()
        if self.current is None:
            log.info("no usable %s version in the registry yet", self.family)
        self.start()

    async def served(self, context: grpc.aio.ServicerContext) -> M:
        """The model a request keeps to its end; UNAVAILABLE while none is published."""
        served = self.current
        if served is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"no {self.family} model that loads and passes its smoke check is published yet",
            )
        return served

    def start(self) -> None:
        """Watch for new versions: the model-updates topic (when on) and polling."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch()))
        if self.settings.serving.reload_from_topic:
            self._consumer_thread = threading.Thread(
                target=self._consume_updates, args=(loop,), daemon=True, name="model-updates"
            )
            self._consumer_thread.start()

    async def stop(self) -> None:
        self._stop_consumer.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer_thread is not None:
            await asyncio.to_thread(self._consumer_thread.join, 10)

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.serving.reload_poll_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("looking for a new %s version failed", self.family)

    def _consume_updates(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the watcher on each ModelUpdate of this family (a thread: kafka-python blocks)."""
        from kafka import KafkaConsumer

        from streamrec.services import kafka_bootstrap
        from streamrec.v1 import events_pb2

        try:
            # No group: every replica hears every announcement; only new ones matter.
            consumer = KafkaConsumer(
                self.settings.kafka.model_updates_topic,
                bootstrap_servers=kafka_bootstrap(self.settings),
                auto_offset_reset="latest",
                enable_auto_commit=False,
                consumer_timeout_ms=500,
            )
        except Exception as error:
            log.warning("not listening on model-updates (%s); polling only", error)
            return
        try:
            while not consumer.assignment() and not self._stop_consumer.is_set():
                consumer.poll(timeout_ms=200)
            for partition in consumer.assignment():
                consumer.position(partition)  # fixes "latest" now: later updates are heard
            self.listening.set()
            while not self._stop_consumer.is_set():
                for message in consumer:
                    update = events_pb2.ModelUpdate.FromString(message.value)
                    if update.model == self.family:
                        loop.call_soon_threadsafe(self._wake.set)
                    if self._stop_consumer.is_set():
                        break
        except Exception:
            log.exception("model-updates consumer stopped; polling only")
        finally:
            consumer.close()


def _name(version: ModelVersion) -> tuple[str, str]:
    return version.family, version.version
