"""A local ClickHouse server (Debian's clickhouse-server, 18.16) for local runs and tests.

Started with a generated config: 127.0.0.1 only, free native and HTTP ports,
its own data, tmp, user-files, format-schema and log folders, a passwordless
`default` user that only loopback can use, and caches and thread counts sized
for a small machine. 18.16 runs as whichever user starts it, root included.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

from streamrec.services.process import LocalServer, MissingTool, free_port, spawn

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = ["clickhouse-server", "clickhouse-client"]
PREFERRED_PORT, PREFERRED_HTTP_PORT = 9000, 8123

USERS_XML = """<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_threads>2</max_threads>
      <background_pool_size>4</background_pool_size>
      <max_memory_usage>2000000000</max_memory_usage>
      <!-- How often an idle connection looks for a shutdown: a stop takes seconds, not 10. -->
      <poll_interval>1</poll_interval>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries>
        <errors>0</errors>
        <result_rows>0</result_rows>
        <read_rows>0</read_rows>
        <execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
"""

CONFIG_XML = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{logs}/server.log</log>
    <errorlog>{logs}/server.err.log</errorlog>
    <size>100M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp_port}</tcp_port>
  <http_port>{http_port}</http_port>
  <path>{data}/</path>
  <tmp_path>{tmp}/</tmp_path>
  <user_files_path>{user_files}/</user_files_path>
  <format_schema_path>{format_schemas}/</format_schema_path>
  <users_config>{users}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"""


def server_command() -> list[str] | None:
    """How to run the server: Debian's clickhouse-server, or a single `clickhouse` binary."""
    for candidate in ("clickhouse-server", "/usr/sbin/clickhouse-server"):
        path = shutil.which(candidate)
        if path:
            return [path]
    single = shutil.which("clickhouse")
    return [single, "server"] if single else None


def install_server() -> list[str]:
    """Install Debian's clickhouse-server with apt when we may; otherwise say what to install."""
    hint = f"apt-get install {' '.join(DEBIAN_PACKAGES)}"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise MissingTool(f"ClickHouse is not installed; install it with: {hint}")
    log.info("installing %s with apt-get", " ".join(DEBIAN_PACKAGES))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *DEBIAN_PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # Usually a stale package list: refresh it and try once more.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise MissingTool(f"installing ClickHouse failed ({hint}):\n{result.stderr[-1500:]}")
    command = server_command()
    if command is None:
        raise MissingTool(f"ClickHouse is still missing after {hint}")
    return command


class LocalClickHouse(LocalServer):
    name = "clickhouse"

    def _write_config(self, tcp_port: int, http_port: int) -> Path:
        """config.xml and users.xml; returns the config's path."""
        folders = {
            name: self.home / name
            for name in ("data", "tmp", "user_files", "format_schemas", "logs")
        }
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        users = self.home / "users.xml"
        users.write_text(USERS_XML)
        paths = {name: escape(str(path)) for name, path in {**folders, "users": users}.items()}
        config = self.home / "config.xml"
        config.write_text(CONFIG_XML.format(tcp_port=tcp_port, http_port=http_port, **paths))
        return config

    def start(self, previous: dict | None) -> dict:
        command = server_command() or install_server()
        previous = previous or {}
        tcp_port = free_port(previous.get("port") or PREFERRED_PORT)
        http_port = free_port(previous.get("http_port") or PREFERRED_HTTP_PORT, taken={tcp_port})
        config = self._write_config(tcp_port, http_port)
        log.info("starting ClickHouse on 127.0.0.1:%d", tcp_port)
        stdout = self.home / "logs" / "stdout.log"
        entry = {
            "pid": spawn([*command, f"--config-file={config}"], stdout),
            "host": "127.0.0.1",
            "port": tcp_port,
            "http_port": http_port,
        }
        timeout_s = self.settings.clickhouse.start_timeout_s
        return self._await_ready(entry, timeout_s, self.home / "logs" / "server.err.log")

    def healthy(self, entry: dict) -> bool:
        """The HTTP ping answers 'Ok.'."""
        if not self.running(entry):
            return False
        # http.client rather than urllib: no proxy from the environment is ever consulted.
        connection = http.client.HTTPConnection("127.0.0.1", entry["http_port"], timeout=2)
        try:
            connection.request("GET", "/ping")
            return connection.getresponse().read().strip() == b"Ok."
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
