"""Model registry: atomic publish, increasing versions, latest, metadata, announcement message."""

import json
import multiprocessing
from pathlib import Path

import pytest

from streamrec.registry import ModelRegistry, model_update
from streamrec.settings import Settings
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

    version = registry.publish("seralm", source, {"metrics": {"ndcg@10": 0.1}, "llm_version": "x"})

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
    assert stored["created_at"].endswith("Z")
    # The source is copied, not moved: a later change to it does not touch the version.
    (source / "weights.bin").write_text("changed")
    assert (version.path / "weights.bin").read_text() == "first"


def test_versions_increase_and_latest_is_the_newest(tmp_path):
    registry = ModelRegistry(tmp_path)
    assert registry.latest("seralm") is None
    assert registry.versions("seralm") == []
    published = [
        registry.publish("seralm", _artifact(tmp_path / f"src{i}", str(i)), {"parent": None})
        for i in range(3)
    ]
    other = registry.publish("genrec", _artifact(tmp_path / "g", "g"), {})

    assert [v.version for v in published] == ["v000001", "v000002", "v000003"]
    assert other.version == "v000001"
    assert registry.latest("seralm").version == "v000003"
    assert [v.version for v in registry.versions("seralm")] == ["v000001", "v000002", "v000003"]
    assert (registry.get("seralm", "v000002").path / "weights.bin").read_text() == "1"
    with pytest.raises(KeyError):
        registry.get("seralm", "v000009")


def test_half_written_folders_are_invisible(tmp_path):
    registry = ModelRegistry(tmp_path)
    registry.publish("seralm", _artifact(tmp_path / "src", "ok"), {})
    # What a publisher killed mid-copy leaves behind, and a version folder without metadata.
    (tmp_path / "seralm" / ".incoming-dead").mkdir()
    (tmp_path / "seralm" / "v000007").mkdir()

    assert registry.latest("seralm").version == "v000001"
    assert [v.version for v in registry.versions("seralm")] == ["v000001"]
    # The next number continues after the last complete version; the empty folder is not
    # overwritten silently either (rename onto a non-empty folder would fail).
    assert registry.publish("seralm", tmp_path / "src", {}).version == "v000002"


def test_a_failed_publish_leaves_no_version(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(FileNotFoundError):
        registry.publish("seralm", tmp_path / "missing", {})
    with pytest.raises(TypeError):  # metadata that is not JSON-able and not str-able
        registry.publish("seralm", _artifact(tmp_path / "src", "x"), {1j: "key"})
    assert registry.latest("seralm") is None
    assert [p.name for p in (tmp_path / "seralm").iterdir() if p.name != ".lock"] == []


def _publish_many(root: str, source: str, count: int, queue) -> None:
    registry = ModelRegistry(Path(root))
    queue.put([registry.publish("seralm", Path(source), {}).version for _ in range(count)])


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

    version = registry.publish("seralm", _artifact(tmp_path / "src", "x"), {})
    message = events_pb2.ModelUpdate.FromString(model_update(version).SerializeToString())
    assert (message.model, message.version) == ("seralm", "v000001")
    assert Path(message.path) == version.path.resolve()
    assert message.timestamp_ms > 0


def test_bad_family_names_are_refused(tmp_path):
    registry = ModelRegistry(tmp_path)
    for name in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            registry.latest(name)
