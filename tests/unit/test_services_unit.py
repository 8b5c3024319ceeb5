"""The launcher's pieces that need no running service."""

import os
import socket
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from streamrec.services import LocalServices, MissingTool, clickhouse_address, kafka_bootstrap
from streamrec.services import clickhouse as clickhouse_module
from streamrec.services.clickhouse import LocalClickHouse, install_server
from streamrec.services.kafka import LocalKafka
from streamrec.services.process import free_port, pid_alive, port_is_free, spawn, stop_pid
from streamrec.settings import Settings


def _tool(folder, name: str, script: str = "exit 0") -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    """A PATH holding only the fake tools a test puts there."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_a_busy_preferred_port_is_skipped():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        busy = sock.getsockname()[1]
        assert not port_is_free(busy)
        chosen = free_port(busy)
        assert chosen != busy and port_is_free(chosen)
    assert free_port(busy) == busy  # free again: the preferred port is taken
    assert free_port(busy, taken={busy}) != busy


def test_missing_java_says_what_to_install(tmp_path, bin_dir):
    kafka = LocalKafka(Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache"))
    with pytest.raises(MissingTool, match="'java' is not installed.*openjdk-17-jre-headless"):
        kafka.ensure_jars()


def test_missing_maven_says_what_to_install(tmp_path, bin_dir):
    _tool(bin_dir, "java")
    kafka = LocalKafka(Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache"))
    with pytest.raises(MissingTool, match="'mvn' is not installed.*apt-get install maven"):
        kafka.ensure_jars()


def test_jars_are_fetched_once_and_a_cut_short_fetch_is_redone(tmp_path, bin_dir, monkeypatch):
    calls = tmp_path / "mvn-calls"
    monkeypatch.setenv("MVN_CALLS", str(calls))
    _tool(bin_dir, "java")
    _tool(
        bin_dir,
        "mvn",
        'echo "$@" >> "$MVN_CALLS"\n'
        "PATH=/usr/bin:/bin\n"
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#*=}";; esac; done\n'
        'mkdir -p "$out" && touch "$out/kafka_2.13-3.9.1.jar"',
    )
    settings = Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    kafka = LocalKafka(settings)
    libs = kafka.ensure_jars()
    assert (libs / "kafka_2.13-3.9.1.jar").exists()
    assert libs == tmp_path / "cache" / "kafka-2.13-3.9.1" / "libs"
    (args,) = calls.read_text().splitlines()
    assert "dependency:copy-dependencies" in args and "-Dkafka.version=3.9.1" in args
    assert f"-Dmaven.repo.local={tmp_path / 'cache' / 'm2'}" in args

    assert kafka.ensure_jars() == libs
    assert len(calls.read_text().splitlines()) == 1  # cached

    (libs.parent / ".complete").unlink()  # as if the last fetch had been killed midway
    (libs / "partial.jar").touch()
    kafka.ensure_jars()
    assert len(calls.read_text().splitlines()) == 2
    assert sorted(p.name for p in libs.iterdir()) == ["kafka_2.13-3.9.1.jar"]


def test_missing_clickhouse_without_root_says_what_to_install(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(clickhouse_module, "server_command", lambda: None)
    with pytest.raises(MissingTool, match="apt-get install clickhouse-server clickhouse-client"):
        install_server()


def test_broker_config(tmp_path):
    settings = Settings(data_dir=tmp_path)
    settings.kafka.partitions = 7
    kafka = LocalKafka(settings)
    lines = kafka._write_config(19092, 19093).read_text().splitlines()
    config = dict(line.split("=", 1) for line in lines)
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert config["process.roles"] == "broker,controller"
    assert config["log.dirs"] == str(tmp_path / "services" / "kafka" / "data")
    assert config["num.partitions"] == "7"
    assert config["auto.create.topics.enable"] == "true"
    assert config["offsets.topic.replication.factor"] == "1"
    assert config["transaction.state.log.replication.factor"] == "1"
    log4j = (tmp_path / "services" / "kafka" / "log4j.properties").read_text()
    assert f"File={tmp_path / 'services' / 'kafka' / 'logs' / 'server.log'}" in log4j


def test_broker_command_has_a_small_heap_and_fast_start_flags(tmp_path):
    settings = Settings(data_dir=tmp_path)
    settings.kafka.heap_mb = 256
    command = LocalKafka(settings)._java("kafka.Kafka", "server.properties")
    assert "-Xmx256m" in command and "-XX:TieredStopAtLevel=1" in command
    assert command[-2:] == ["kafka.Kafka", "server.properties"]


def test_clickhouse_config(tmp_path):
    home = tmp_path / "services" / "clickhouse"
    config = ET.parse(LocalClickHouse(Settings(data_dir=tmp_path))._write_config(19000, 18123))
    assert config.findtext("listen_host") == "127.0.0.1"
    assert config.findtext("tcp_port") == "19000" and config.findtext("http_port") == "18123"
    for tag, folder in (("path", "data"), ("tmp_path", "tmp"), ("user_files_path", "user_files")):
        assert config.findtext(tag) == f"{home / folder}/"
        assert (home / folder).is_dir()
    assert config.findtext("logger/log") == str(home / "logs" / "server.log")
    users = ET.parse(config.findtext("users_config"))
    assert users.findtext("users/default/password") == ""
    assert [ip.text for ip in users.findall("users/default/networks/ip")] == ["127.0.0.1", "::1"]
    assert users.findtext("profiles/default/max_threads") == "2"


def test_stop_never_signals_a_process_that_is_not_ours(tmp_path):
    """A PID in an old state file may have been reused by another program since."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        kafka = LocalKafka(Settings(data_dir=tmp_path))
        entry = {"pid": stranger.pid}
        assert not kafka.running(entry) and not kafka.healthy(entry)
        kafka.stop(entry)
        assert stranger.poll() is None and pid_alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


def test_a_spawned_process_is_known_by_its_command_line_at_once_and_stops(tmp_path):
    marker = str(tmp_path / "marker")
    pid = spawn([sys.executable, "-c", "import time; time.sleep(30)", marker], tmp_path / "out")
    try:
        assert pid_alive(pid, marker)
    finally:
        stop_pid(pid, marker, timeout_s=5)
    assert not pid_alive(pid)
    assert not Path(f"/proc/{pid}").exists()  # reaped, not left as a zombie


def test_without_services_the_error_says_how_to_get_them(tmp_path):
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="STREAMREC_KAFKA__BOOTSTRAP_SERVERS"):
        kafka_bootstrap(settings)
    with pytest.raises(RuntimeError, match="STREAMREC_CLICKHOUSE__HOST"):
        clickhouse_address(settings)
    assert LocalServices(settings).status() == {
        "kafka": {"running": False},
        "clickhouse": {"running": False},
    }


def test_configured_addresses_win_over_the_local_services(tmp_path):
    settings = Settings(data_dir=tmp_path)
    settings.kafka.bootstrap_servers = "broker-1:9092,broker-2:9092"
    settings.clickhouse.host = "ch.internal"
    assert kafka_bootstrap(settings) == "broker-1:9092,broker-2:9092"
    assert clickhouse_address(settings) == ("ch.internal", 9000)


def test_addresses_come_from_the_state_file(tmp_path):
    settings = Settings(data_dir=tmp_path)
    launcher = LocalServices(settings)
    launcher._write_state(
        {
            "kafka": {"pid": 1, "bootstrap_servers": "127.0.0.1:19092", "running": True},
            "clickhouse": {"pid": 2, "host": "127.0.0.1", "port": 19000, "running": True},
        }
    )
    assert kafka_bootstrap(settings) == "127.0.0.1:19092"
    assert clickhouse_address(settings) == ("127.0.0.1", 19000)
    connected = launcher.connected_settings()
    assert connected.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert (connected.clickhouse.host, connected.clickhouse.port) == ("127.0.0.1", 19000)
