"""Model registry: versioned artifact folders that workers publish and servers load.

Layout: ``<root>/<family>/<version>/`` holding the artifact files plus
``metadata.json``. Versions are ``v000001``, ``v000002``, ... per family. A
version is copied into a hidden scratch folder first and renamed into place
in one step, so a reader (a server polling for new versions) never sees a
half-written folder: a version folder either is complete or does not exist.
A file lock per family serialises the choice of the next number between
publishers on one file system.

Every job publishes through `publish()`: the version is added, then announced
on the ``model-updates`` topic. Servers also poll `latest()`, so an announcement
that fails is logged and only delays a reload.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamrec.settings import Settings

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
# Marks of versions servers refused, one `<version>.json` each, under `<root>/<family>/`.
FAILED_DIR = ".failed"
VERSION_PATTERN = re.compile(r"^v(\d{6,})$")
# The LoRA adapters alignment publishes and the knowledge job applies. The model families
# are settings (`recommender.family`, `genrec.family`, `recsysllm.family`).
LLM_ADAPTER_FAMILY = "llm-adapter"
# What the registry itself writes into every metadata.json.
RECORD_KEYS = ("family", "version", "created_at", "created_at_ms")


@dataclass(frozen=True)
class VersionMetadata:
    """What a publisher says about a version. The four named fields are in every
    metadata.json (None or {} when not given), so readers never guess keys; `extra`
    holds what only one job writes (its source, the Kafka offsets, the run's figures)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    llm_version: str | None = None  # the LLM whose knowledge the version carries
    adapter_version: str | None = None  # the llm-adapter version that LLM had
    parent: str | None = None  # the version this one was trained from
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The metadata.json body (before the registry's own keys)."""
        named = {key: value for key, value in asdict(self).items() if key != "extra"}
        clash = set(self.extra) & (set(named) | set(RECORD_KEYS))
        if clash:
            raise ValueError(f"extra metadata may not set {sorted(clash)}")
        return {**named, **self.extra}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> VersionMetadata:
        """A stored version's metadata, without the registry's own keys (to inherit it)."""
        named = {"metrics", "llm_version", "adapter_version", "parent"}
        return cls(
            metrics=dict(record.get("metrics") or {}),
            llm_version=record.get("llm_version"),
            adapter_version=record.get("adapter_version"),
            parent=record.get("parent"),
            extra={
                key: value
                for key, value in record.items()
                if key not in named and key not in RECORD_KEYS
            },
        )


def version_name(number: int) -> str:
    return f"v{number:06d}"


def version_number(name: str) -> int | None:
    match = VERSION_PATTERN.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ModelVersion:
    """One published, immutable version of a model family."""

    family: str
    version: str
    path: Path
    metadata: dict = field(default_factory=dict)

    @property
    def number(self) -> int:
        return version_number(self.version) or 0


@dataclass(frozen=True)
class FailedVersion:
    """A version a server refused: it did not load or failed its smoke check."""

    family: str
    version: str
    reason: str
    failed_at: str  # UTC, ISO 8601


class ModelRegistry:
    """Versioned model folders under one root (a local path or a shared volume)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        root = settings.registry.root or str(settings.data_dir / "registry")
        return cls(Path(root))

    def _family_dir(self, family: str) -> Path:
        if not family or "/" in family or family.startswith("."):
            raise ValueError(f"invalid model family name {family!r}")
        return self.root / family

    @contextmanager
    def _family_lock(self, family: str) -> Iterator[None]:
        folder = self._family_dir(family)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def add(
        self, family: str, folder: Path | str, metadata: VersionMetadata | None = None
    ) -> ModelVersion:
        """Copy `folder` in as the next version of `family`, with its metadata; no
        announcement (jobs call `publish()`, which announces too)."""
        source = Path(folder)
        if not source.is_dir():
            raise FileNotFoundError(f"not a folder to publish: {source}")
        family_dir = self._family_dir(family)
        family_dir.mkdir(parents=True, exist_ok=True)
        scratch = family_dir / f".incoming-{uuid.uuid4().hex}"
        shutil.copytree(source, scratch)
        try:
            with self._family_lock(family):
                latest = self.latest(family)
                name = version_name((latest.number if latest else 0) + 1)
                record = (metadata or VersionMetadata()).record()
                record.update(
                    {
                        "family": family,
                        "version": name,
                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "created_at_ms": time.time_ns() // 1_000_000,
                    }
                )
                (scratch / METADATA_FILE).write_text(
                    json.dumps(record, indent=2, sort_keys=True, default=str)
                )
                os.rename(scratch, family_dir / name)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return ModelVersion(family, name, family_dir / name, record)

    def versions(self, family: str) -> list[ModelVersion]:
        """Every complete version of `family`, oldest first."""
        family_dir = self._family_dir(family)
        if not family_dir.is_dir():
            return []
        found = []
        for entry in family_dir.iterdir():
            number = version_number(entry.name)
            if number is None or not (entry / METADATA_FILE).is_file():
                continue
            found.append((number, entry))
        return [self._read(family, entry) for _, entry in sorted(found)]

    def latest(self, family: str) -> ModelVersion | None:
        family_dir = self._family_dir(family)
        if not family_dir.is_dir():
            return None
        best: tuple[int, Path] | None = None
        for entry in family_dir.iterdir():
            number = version_number(entry.name)
            if number is None or not (entry / METADATA_FILE).is_file():
                continue
            if best is None or number > best[0]:
                best = (number, entry)
        return self._read(family, best[1]) if best else None

    def get(self, family: str, version: str) -> ModelVersion:
        entry = self._family_dir(family) / version
        if version_number(version) is None or not (entry / METADATA_FILE).is_file():
            raise KeyError(f"no version {version!r} of {family!r} under {self.root}")
        return self._read(family, entry)

    def mark_failed(self, family: str, version: str, reason: str) -> None:
        """Record that `version` failed to load or its smoke check: servers skip it (and fall
        back to an older one). The mark is a file beside the versions, which stay immutable;
        deleting it lets servers try the version again."""
        folder = self._family_dir(family) / FAILED_DIR
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "version": version,
            "reason": reason,
            "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": os.uname().nodename,
        }
        scratch = folder / f".{version}-{uuid.uuid4().hex}"
        scratch.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(scratch, folder / f"{version}.json")

    def failed(self, family: str) -> list[FailedVersion]:
        """The versions of `family` marked failed, oldest first, each with its reason."""
        folder = self._family_dir(family) / FAILED_DIR
        if not folder.is_dir():
            return []
        found = []
        for entry in sorted(folder.glob("v*.json")):
            record = json.loads(entry.read_text())
            found.append(
                FailedVersion(family, record["version"], record["reason"], record["failed_at"])
            )
        return found

    @staticmethod
    def _read(family: str, entry: Path) -> ModelVersion:
        metadata = json.loads((entry / METADATA_FILE).read_text())
        return ModelVersion(family, entry.name, entry, metadata)


def registered_version(folder: Path | str, family: str) -> str | None:
    """The version of `family` that a registry version's folder holds (its metadata.json
    says so), else None: a folder handed over by path keeps its registry name."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("family") != family:
        return None
    version = record.get("version")
    return version if isinstance(version, str) and version_number(version) else None


def model_update(version: ModelVersion):
    """The `ModelUpdate` message announcing `version`."""
    from streamrec.v1 import events_pb2

    return events_pb2.ModelUpdate(
        model=version.family,
        version=version.version,
        path=str(Path(version.path).resolve()),
        timestamp_ms=time.time_ns() // 1_000_000,
    )


def announce(settings: Settings, version: ModelVersion) -> None:
    """Send a `ModelUpdate` for `version` on the model-updates topic (keyed by family)."""
    from kafka import KafkaProducer

    from streamrec.services import kafka_bootstrap

    timeout_ms = int(settings.registry.announce_timeout_s * 1000)
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap(settings),
        acks="all",
        retries=settings.kafka.send_retries,
        # Bounded like the flush below: a broker that is down costs the timeout, not 30 s.
        bootstrap_timeout_ms=timeout_ms,
        max_block_ms=timeout_ms,
    )
    try:
        producer.send(
            settings.kafka.model_updates_topic,
            key=version.family.encode(),
            value=model_update(version).SerializeToString(),
        )
        producer.flush(settings.registry.announce_timeout_s)
    finally:
        producer.close(settings.registry.announce_timeout_s)


def publish(
    settings: Settings,
    family: str,
    folder: Path | str,
    metadata: VersionMetadata,
    before_announce: Callable[[ModelVersion], None] | None = None,
) -> ModelVersion:
    """Add `folder` as the next version of `family` and announce it on model-updates.
    A failed announcement is a warning, not an error: the version is in the registry,
    and servers polling it find the version on their next look. `before_announce` runs
    between the two (the online trainer commits the version's Kafka offsets there)."""
    version = ModelRegistry.from_settings(settings).add(family, folder, metadata)
    if before_announce is not None:
        before_announce(version)
    try:
        announce(settings, version)
    except Exception as error:  # Kafka down or slow: polling still finds the version
        log.warning("published %s/%s but could not announce it: %s", family, version.version, error)
    return version
