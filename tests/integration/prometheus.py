"""A real Prometheus (Debian's package) for the tests: started on a free loopback port
with a generated config that scrapes the given targets every second and evaluates the
rules of deploy/monitoring/ every second, stopped with the test."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from streamrec.services.process import free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "deploy" / "monitoring").glob("*.rules.yml"))


class Prometheus:
    def __init__(self, folder: Path, targets: dict[str, str]):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in RULES],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60) -> Prometheus:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: ./run test installs Debian's prometheus package"
        self.log = open(self.folder / "prometheus.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"Prometheus not ready in {timeout_s}s")

    def api(self, path: str, **query) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def wait_for(self, check, timeout_s: float = 60, what: str = "a condition"):
        """Poll `check()` until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus never showed {what} in {timeout_s}s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.log.close()
