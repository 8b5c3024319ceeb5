"""Settings: one tree, read from STREAMREC_ environment variables."""

from pathlib import Path

from streamrec.settings import Settings


def test_defaults_name_every_topic_and_section():
    settings = Settings()
    assert settings.kafka.interactions_topic == "interactions"
    assert settings.kafka.dlq_topic == "interactions.dlq"
    assert settings.clickhouse.database == "streamrec"
    assert settings.services_dir == settings.data_dir / "services"


def test_environment_overrides_nested_values(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMREC_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("STREAMREC_CLICKHOUSE__HOST", "ch.example")
    monkeypatch.setenv("STREAMREC_STREAMS__SEQUENCE_LENGTH", "200")
    settings = Settings()
    assert settings.data_dir == Path(tmp_path)
    assert settings.kafka.partitions == 12
    assert settings.clickhouse.host == "ch.example"
    assert settings.streams.sequence_length == 200


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("STREAMREC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert Settings().cache_dir == tmp_path / "streamrec"
