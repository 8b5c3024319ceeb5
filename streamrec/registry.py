"""Model registry: versioned artifact folders that workers publish and servers load.

Layout: ``<root>/<family>/<version>/`` holding the artifact files plus
``metadata.json``. Versions are ``v000001``, ``v000002``, ... per family. A
version is copied into a hidden scratch folder first and renamed into place
in one step, so a reader (a server polling for new versions) never sees a
half-written folder: a version folder either is complete or does not exist.
A file lock per family serialises the choice of the next number between
publishers on one file system.

A new version is announced on the ``model-updates`` topic; servers also poll
`latest()` so a lost announcement only delays a reload.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.settings import Settings

METADATA_FILE = "metadata.json"
VERSION_PATTERN = re.compile(r"^v(\d{6,})$")
# Metadata keys every version carries (empty when the publisher gave none).
STANDARD_KEYS = ("metrics", "llm_version", "adapter_version", "parent")


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

    def publish(
        self, family: str, folder: Path | str, metadata: dict | None = None
    ) -> ModelVersion:
        """Copy `folder` in as the next version of `family`, with its metadata."""
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
                record = {key: None for key in STANDARD_KEYS}
                record["metrics"] = {}
                record.update(metadata or {})
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

    @staticmethod
    def _read(family: str, entry: Path) -> ModelVersion:
        metadata = json.loads((entry / METADATA_FILE).read_text())
        return ModelVersion(family, entry.name, entry, metadata)


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

    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap(settings),
        acks="all",
        retries=settings.kafka.send_retries,
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
