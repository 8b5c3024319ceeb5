"""A single-node Apache Kafka (KRaft, combined broker and controller) for local runs and tests.

The jars come from Maven Central through deploy/kafka/pom.xml and are cached
per version outside the checkout; the storage is formatted on first start;
the broker listens on 127.0.0.1 only, on free ports, with its own data and
log folders.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from streamrec.services.process import (
    LocalServer,
    MissingTool,
    free_port,
    port_open,
    spawn,
)
from streamrec.settings import Settings

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
JAVA_HINT = "a Java 17 runtime, e.g. apt-get install openjdk-17-jre-headless"
MAVEN_HINT = "Maven, e.g. apt-get install maven"
PREFERRED_PORT, PREFERRED_CONTROLLER_PORT = 9092, 9093
# A fast JVM start for a small broker that tests start often and that never runs hot for long:
# the C1 compiler only, the serial collector, no perf-data file.
JVM_FLAGS = [
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
]


def require(tool: str, install: str) -> str:
    """The tool's path, or an error that says what to install."""
    path = shutil.which(tool)
    if not path:
        raise MissingTool(f"'{tool}' is not installed; install {install}")
    return path


class LocalKafka(LocalServer):
    name = "kafka"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        k = settings.kafka
        self.libs = (
            settings.cache_dir / f"kafka-{k.scala_version}-{k.version}" / "libs"
        ).absolute()

    def ensure_jars(self) -> Path:
        """Fetch the broker's jars once per version.

        The marker is written last, so a download cut short is redone; the lock keeps two
        first runs (say, two test sessions) from fetching into the same folder at once.
        """
        marker = self.libs.parent / ".complete"
        if marker.exists():
            return self.libs
        require("java", JAVA_HINT)
        mvn = require("mvn", MAVEN_HINT)
        if not POM.exists():
            raise MissingTool(f"{POM} is missing: run streamrec from its source checkout")
        self.libs.parent.mkdir(parents=True, exist_ok=True)
        with open(self.libs.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                self._fetch_jars(mvn)
                marker.write_text(self.settings.kafka.version)
        return self.libs

    def _fetch_jars(self, mvn: str) -> None:
        k = self.settings.kafka
        shutil.rmtree(self.libs, ignore_errors=True)
        log.info(
            "fetching the Kafka %s jars with Maven (first run only) into %s", k.version, self.libs
        )
        started = time.perf_counter()
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-Dkafka.version={k.version}",
            f"-Dscala.binary.version={k.scala_version}",
            f"-DoutputDirectory={self.libs}",
            f"-Dmaven.repo.local={(self.settings.cache_dir / 'm2').absolute()}",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"fetching the Kafka jars failed:\n{result.stdout}{result.stderr}")
        log.info(
            "fetched %d Kafka jars in %.0fs",
            len(list(self.libs.glob("*.jar"))),
            time.perf_counter() - started,
        )

    def _java(self, main: str, *args: str, heap: bool = True) -> list[str]:
        java = require("java", JAVA_HINT)
        heap_mb = self.settings.kafka.heap_mb
        memory = [f"-Xmx{heap_mb}m", f"-Xms{heap_mb // 2}m"] if heap else []
        return [
            java,
            *memory,
            *JVM_FLAGS,
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _write_config(self, port: int, controller_port: int) -> Path:
        """server.properties and log4j.properties for one broker that is its own controller."""
        data, logs = self.home / "data", self.home / "logs"
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.settings.kafka.partitions),
            "auto.create.topics.enable": "true",
            # One broker: every internal topic has one replica.
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            # Consumer groups form at once instead of waiting for more members.
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "log.cleaner.threads": "1",
        }
        config = self.home / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        # Everything to the log file; errors also to stdout.log, where a failed start is read.
        (self.home / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, file, console\n"
            "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
            f"log4j.appender.file.File={logs / 'server.log'}\n"
            "log4j.appender.file.MaxFileSize=50MB\n"
            "log4j.appender.file.MaxBackupIndex=2\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.console.Threshold=ERROR\n"
            "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.console.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        return config

    def _format_storage(self, config: Path) -> None:
        """Give the data folder a cluster id, once: KRaft refuses an unformatted one."""
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        command = self._java(
            # `--cluster-id=`: an id may begin with "-", which would read as an option.
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(config),
            heap=False,
        )
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"formatting the Kafka storage failed:\n{result.stdout}{result.stderr}"
            )

    def start(self, previous: dict | None) -> dict:
        self.ensure_jars()
        previous = previous or {}
        port = free_port(previous.get("port") or PREFERRED_PORT)
        controller_port = free_port(
            previous.get("controller_port") or PREFERRED_CONTROLLER_PORT, taken={port}
        )
        config = self._write_config(port, controller_port)
        self._format_storage(config)
        log.info("starting Kafka %s on 127.0.0.1:%d", self.settings.kafka.version, port)
        stdout = self.home / "logs" / "stdout.log"
        entry = {
            "pid": spawn(self._java("kafka.Kafka", str(config)), stdout),
            "port": port,
            "controller_port": controller_port,
            "bootstrap_servers": f"127.0.0.1:{port}",
        }
        return self._await_ready(entry, self.settings.kafka.start_timeout_s, stdout)

    def healthy(self, entry: dict) -> bool:
        """A metadata request succeeds (the port is probed first: a refused connection
        would make the client back off and log warnings)."""
        if not self.running(entry) or not port_open(entry["port"]):
            return False
        # Imported here: kafka-python is slow to import and most commands never need it.
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=entry["bootstrap_servers"], request_timeout_ms=3000
            )
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()
