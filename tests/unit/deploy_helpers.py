"""What the deploy tests share: the repository's deploy files, rendered manifests, and
the code they must agree with (the settings tree, the typer app, the wire API)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from unittest import mock

import pytest
import typer
import yaml
from grpc_health.v1 import health_pb2
from pydantic import BaseModel

from streamrec.cli import app
from streamrec.settings import Settings
from streamrec.v1 import genrec_pb2, ops_pb2, recommender_pb2, recsysllm_pb2

# The generated modules register the wire API's services in the default pool.
API_MODULES = (genrec_pb2, ops_pb2, recommender_pb2, recsysllm_pb2, health_pb2)
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("dev", "production")
# Our images and the Dockerfile each is built from.
OUR_IMAGES = {
    "streamrec": DEPLOY / "docker" / "Dockerfile",
    "streamrec-gpu": DEPLOY / "docker" / "Dockerfile.gpu",
}
# Third-party images a manifest may run; each must carry a pinned tag.
THIRD_PARTY_IMAGES = {
    "apache/kafka",
    "clickhouse/clickhouse-server",
    "clickhouse/clickhouse-keeper",
    "prom/prometheus",
    "grafana/grafana",
}
# What a streamrec container may carry besides settings: Python's and the NVIDIA runtime's.
RUNTIME_VARIABLES = {
    "PATH",
    "PYTHONUNBUFFERED",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
}
# The Secrets the production overlay expects to exist already (created out of band).
EXTERNAL_SECRETS = {"streamrec-secrets", "clickhouse-secrets"}
WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet"}


# --- the code's side: settings, commands, services ---


def settings_variables(model: type[BaseModel] = Settings, prefix: str = "STREAMREC_") -> set[str]:
    """Every environment variable the settings tree reads."""
    names = set()
    for name, field in model.model_fields.items():
        variable = prefix + name.upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_variables(annotation, variable + "__")
        else:
            names.add(variable)
    return names


@contextmanager
def only_environment(variables: dict[str, str]):
    """os.environ holding these STREAMREC_ variables and no others."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    with mock.patch.dict(os.environ, {**kept, **variables}, clear=True):
        yield


def settings_from(variables: dict[str, str]) -> Settings:
    """The settings a container with these variables would see (values validated)."""
    with only_environment({k: v for k, v in variables.items() if k.startswith("STREAMREC_")}):
        return Settings()


def is_group(command) -> bool:
    # typer carries its own copy of click, so groups are told by their sub-commands.
    return hasattr(command, "commands")


def resolve_command(args: list[str]):
    """The CLI command these arguments run; raises a usage error when they name none."""
    command = typer.main.get_command(app)
    rest = list(args)
    while is_group(command):
        assert rest and rest[0] in command.commands, (
            f"`streamrec {' '.join(args)}` names no command"
        )
        command = command.commands[rest.pop(0)]
    # Parsing checks every option and argument; the command itself is not run.
    command.make_context("streamrec", rest)
    return command


def command_name(args: list[str]) -> str:
    words = []
    command = typer.main.get_command(app)
    for word in args:
        if not is_group(command) or word not in command.commands:
            break
        command = command.commands[word]
        words.append(word)
    return " ".join(words)


LISTENING_COMMANDS = ("serve", "stream worker", "jobs page", "worker trainer", "worker scheduler")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def listening_ports(command: str, settings: Settings) -> set[int]:
    """The ports a streamrec command listens on for other containers, as its settings give
    them (a port bound to loopback cannot be published or scraped)."""
    serving = settings.serving
    return {
        "serve": {serving.port}
        | ({serving.metrics_port} if serving.metrics_host not in LOOPBACK else set()),
        "stream worker": {settings.streams.web_port},
        "jobs page": {settings.ops.page_port},
        "worker trainer": {settings.ops.worker_metrics_port},
        "worker scheduler": {settings.ops.worker_metrics_port},
    }.get(command, set())


# --- the manifests' side ---


def image_name(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    return name, tag


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_environment(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {k: str(v) for k, v in environment.items()}


def container_ports(ports: list) -> set[int]:
    """Container-side ports of compose `ports:` entries ("host:port:container")."""
    return {int(str(entry).split(":")[-1].split("/")[0]) for entry in ports}


@cache
def rendered(target: str) -> tuple[dict, ...]:
    """The kustomize render of a folder under deploy/kubernetes (`kubectl kustomize`, or the
    standalone `kustomize build` that `./run test` installs)."""
    folder = str(KUBERNETES / target)
    if kubectl := shutil.which("kubectl"):
        command = [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", folder]
    elif kustomize := shutil.which("kustomize"):
        command = [kustomize, "build", "--load-restrictor", "LoadRestrictionsNone", folder]
    else:
        pytest.skip("neither kubectl nor kustomize is installed: the renders are not checked")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kustomize {target} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def pod_template(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]
    return workload["spec"]["template"]


def pod_spec(workload: dict) -> dict:
    return pod_template(workload)["spec"]


def pod_labels(workload: dict) -> dict:
    return pod_template(workload).get("metadata", {}).get("labels", {})


def find(objects, kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert matches, f"no {kind} {name}"
    return matches[0]


def configmap_by_prefix(objects, prefix: str) -> dict:
    """A generated ConfigMap (kustomize appends a hash to its name)."""
    matches = [
        o
        for o in objects
        if o["kind"] == "ConfigMap"
        and re.fullmatch(rf"{prefix}(-[a-z0-9]{{10}})?", o["metadata"]["name"])
    ]
    assert len(matches) == 1, f"one ConfigMap {prefix} expected"
    return matches[0]


def secret_keys(objects) -> dict[str, set[str]]:
    """Keys of every Secret rendered, plus those of the base's Secret for external ones."""
    keys = {
        o["metadata"]["name"]: set(o.get("stringData", {})) | set(o.get("data", {}))
        for o in objects
        if o["kind"] == "Secret"
    }
    base = yaml.safe_load_all((KUBERNETES / "base" / "secret.yaml").read_text())
    base_keys = {secret["metadata"]["name"]: set(secret["stringData"]) for secret in base}
    for name in EXTERNAL_SECRETS:
        keys.setdefault(name, base_keys[name])
    return keys


def container_environment(container: dict, objects) -> dict[str, str]:
    """Every variable a Kubernetes container gets, with a stand-in for secret values."""
    variables: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = find(objects, "ConfigMap", source["configMapRef"]["name"])
            variables.update(config.get("data", {}))
        if "secretRef" in source:
            for key in secret_keys(objects)[source["secretRef"]["name"]]:
                variables[key] = "secret"
    for entry in container.get("env", []):
        variables[entry["name"]] = str(entry.get("value", "from-reference"))
    return variables


def our_containers(objects):
    """(workload, container) for every container running a streamrec image."""
    for workload in objects:
        if workload["kind"] not in WORKLOADS:
            continue
        spec = pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            if image_name(container["image"])[0] in OUR_IMAGES:
                yield workload, container


def all_containers(objects):
    for workload in objects:
        if workload["kind"] in WORKLOADS:
            spec = pod_spec(workload)
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield workload, container


def check_image(image: str) -> None:
    name, tag = image_name(image)
    assert name in OUR_IMAGES or name in THIRD_PARTY_IMAGES, f"unknown image {image}"
    assert tag and tag != "latest", f"{image} needs a pinned tag"
    if name == "apache/kafka":
        assert tag == Settings().kafka.version, "Kafka's image is not the version the code speaks"


def from_env_names(xml_text: str) -> set[str]:
    return {e.get("from_env") for e in ElementTree.fromstring(xml_text).iter() if e.get("from_env")}


# --- every file parses ---


def deploy_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in suffixes and p.is_file())


def compose_services() -> dict[str, dict]:
    return compose()["services"]
