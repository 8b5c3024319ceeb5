"""Model registry: atomic versions, increasing numbers, latest, typed metadata, and publish()
(add + announce, an announcement that fails only logged)."""

import json
import logging
import multiprocessing
import socket
from pathlib import Path

import pytest

from streamrec.registry import ModelRegistry, VersionMetadata, model_update, publish
from streamrec.settings import KafkaSettings, RegistrySettings, Settings
from streamrec.v1 import events_pb2


def _artifact(folder: Path, marker: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_text(marker)
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.txt").write_text(marker * 2)
    return folder


def test_publish_copies_the_folder_with_metadata(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    source = _artifact(tmp_path / "a", "first")

    metadata = VersionMetadata(metrics={"ndcg@10": 0.1}, llm_version="x", extra={"source": "t"})
    version = registry.add("seralm", source, metadata)

    assert version.version == "v000001"
    assert version.path == tmp_path / "registry" / "seralm" / "v000001"
    assert (version.path / "weights.bin").read_text() == "first"
    assert (version.path / "sub" / "nested.txt").read_text() == "firstfirst"
    stored = json.loads((version.path / "metadata.json").read_text())
    assert stored["family"] == "seralm"
    assert stored["version"] == "v000001"
    assert stored["metrics"] == {"ndcg@10": 0.1}
    assert stored["llm_version"] == "x"
    assert stored["adapter_version"] is None and stored["parent"] is None
    assert stored["source"] == "t"
    assert VersionMetadata.from_record(stored) == metadata
    assert stored["created_at"].endswith("Z")
    # The source is copied, not moved: a later change to it does not touch the version.
    (source / "weights.bin").write_text("changed")
    assert (version.path / "weights.bin").read_text() == "first"


def test_versions_increase_and_latest_is_the_newest(tmp_path):
    registry = ModelRegistry(tmp_path)
    assert registry.latest("seralm") is None
    assert registry.versions("seralm") == []
    published = [registry.add("seralm", _artifact(tmp_path / f"src{i}", str(i))) for i in range(3)]
    other = registry.add("genrec", _artifact(tmp_path / "g", "g"))

    assert [v.version for v in published] == ["v000001", "v000002", "v000003"]
    assert other.version == "v000001"
    assert registry.latest("seralm").version == "v000003"
    assert [v.version for v in registry.versions("seralm")] == ["v000001", "v000002", "v000003"]
    assert (registry.get("seralm", "v000002").path / "weights.bin").read_text() == "1"
    with pytest.raises(KeyError):
        registry.get("seralm", "v000009")


def test_half_written_folders_are_invisible(tmp_path):
    registry = ModelRegistry(tmp_path)
    registry.add("seralm", _artifact(tmp_path / "src", "ok"))
    # What a publisher killed mid-copy leaves behind, and a version folder without metadata.
    (tmp_path / "seralm" / ".incoming-dead").mkdir()
    (tmp_path / "seralm" / "v000007").mkdir()

    assert registry.latest("seralm").version == "v000001"
    assert [v.version for v in registry.versions("seralm")] == ["v000001"]
    # The next number continues after the last complete version; the empty folder is not
    # overwritten silently either (rename onto a non-empty folder would fail).
    assert registry.add("seralm", tmp_path / "src").version == "v000002"


def test_a_failed_publish_leaves_no_version(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(FileNotFoundError):
        registry.add("seralm", tmp_path / "missing")
    with pytest.raises(TypeError):  # metadata that is not JSON-able and not str-able
        registry.add("seralm", _artifact(tmp_path / "src", "x"), VersionMetadata(extra={1j: "k"}))
    with pytest.raises(ValueError, match="parent"):  # extra may not shadow a named field
        registry.add("seralm", tmp_path / "src", VersionMetadata(extra={"parent": "v000001"}))
    assert registry.latest("seralm") is None
    assert [p.name for p in (tmp_path / "seralm").iterdir() if p.name != ".lock"] == []


def _publish_many(root: str, source: str, count: int, queue) -> None:
    registry = ModelRegistry(Path(root))
    queue.put([registry.add("seralm", Path(source)).version for _ in range(count)])


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    source = _artifact(tmp_path / "src", "x")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_publish_many, args=(str(tmp_path / "r"), str(source), 5, queue))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    got = [version for _ in workers for version in queue.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=60)

    assert sorted(got) == [f"v{n:06d}" for n in range(1, 16)]
    assert ModelRegistry(tmp_path / "r").latest("seralm").version == "v000015"


def test_from_settings_and_announcement_message(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert ModelRegistry.from_settings(settings).root == tmp_path / "registry"
    chosen = settings.model_copy(
        update={"registry": settings.registry.model_copy(update={"root": str(tmp_path / "x")})}
    )
    registry = ModelRegistry.from_settings(chosen)
    assert registry.root == tmp_path / "x"

    version = registry.add("seralm", _artifact(tmp_path / "src", "x"))
    message = events_pb2.ModelUpdate.FromString(model_update(version).SerializeToString())
    assert (message.model, message.version) == ("seralm", "v000001")
    assert Path(message.path) == version.path.resolve()
    assert message.timestamp_ms > 0


def test_bad_family_names_are_refused(tmp_path):
    registry = ModelRegistry(tmp_path)
    for name in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            registry.latest(name)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_publish_adds_the_version_and_only_logs_a_failed_announcement(tmp_path, caplog):
    """No broker listens: the announcement is tried, fails, and is logged; the version
    is in the registry all the same (servers poll it), and publish returns it."""
    settings = Settings(
        data_dir=tmp_path,
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}"),
        registry=RegistrySettings(announce_timeout_s=1.0),
    )
    metadata = VersionMetadata(metrics={"ndcg@10": 0.2}, parent="v000007")
    with caplog.at_level(logging.WARNING, logger="streamrec.registry"):
        version = publish(settings, "seralm", _artifact(tmp_path / "src", "x"), metadata)
    assert version.version == "v000001"
    latest = ModelRegistry.from_settings(settings).latest("seralm")
    assert latest.version == "v000001" and latest.metadata["parent"] == "v000007"
    assert VersionMetadata.from_record(latest.metadata) == metadata
    assert any("could not announce" in record.message for record in caplog.records)
