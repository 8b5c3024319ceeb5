"""Deployment files agree with the code.

Every compose, Kubernetes, Prometheus and Grafana file parses; every image,
port, environment variable, secret and command that a manifest names is one
the code reads (the settings tree, the typer app, the wire API), so settings
and manifests cannot drift apart; docker compose and kustomize validate the
files (`./run test` builds both, and grpcurl, with `go install`); the
commands of the README and docs/ resolve against the CLI and the gRPC services.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from unittest import mock

import grpc
import pytest
import typer
import yaml
from google.protobuf import json_format, symbol_database
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel

from streamrec.assets import ENCODER_NAME, LLM_NAME
from streamrec.cli import app
from streamrec.db import schema_statements
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


def listening_ports(command: str, settings: Settings) -> set[int]:
    """The ports a streamrec command listens on, as its settings give them."""
    return {
        "serve": {settings.serving.port, settings.serving.metrics_port},
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


def test_every_deploy_file_parses():
    yaml_files = deploy_files(".yml", ".yaml")
    assert COMPOSE in yaml_files and len(yaml_files) >= 15
    for path in yaml_files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{path} is empty"
    for path in deploy_files(".json"):
        json.loads(path.read_text())
    for path in deploy_files(".xml"):
        ElementTree.parse(path)
    for path in deploy_files(".env"):
        for line in path.read_text().splitlines():
            assert not line.strip() or line.startswith("#") or re.fullmatch(r"[A-Z0-9_]+=.*", line)


# --- Dockerfiles ---


def python_packages() -> set[str]:
    """The top-level packages pyproject.toml installs (its `packages.find` patterns)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.rstrip("*") for pattern in patterns}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("image", sorted(OUR_IMAGES))
def test_dockerfiles_run_streamrec_as_a_non_root_user(image):
    instructions = dockerfile_instructions(OUR_IMAGES[image])
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    user = [arg for op, arg in final_stage if op == "USER"]
    assert user and user[-1] not in {"0", "root"}
    assert ("ENTRYPOINT", '["streamrec"]') in final_stage
    for op, arg in instructions:
        if op == "COPY" and not arg.startswith("--from"):
            for source in shlex.split(arg)[:-1]:
                assert (ROOT / source).exists(), f"{image} copies missing {source}"
    environment = dict(
        word.split("=", 1) for op, arg in final_stage if op == "ENV" for word in shlex.split(arg)
    )
    unknown = set(environment) - settings_variables() - RUNTIME_VARIABLES
    assert not unknown, f"{image} sets variables no code reads: {unknown}"
    settings = settings_from(environment)
    for folder, name in (
        (settings.assets.llm_path, LLM_NAME),
        (settings.assets.text_encoder_path, ENCODER_NAME),
    ):
        # Baked assets sit where `streamrec assets fetch` puts them under the build's cache dir.
        assert not folder or folder.endswith(f"/models/{name}")
    ignore = OUR_IMAGES[image].with_name(OUR_IMAGES[image].name + ".dockerignore")
    admitted = {
        line[1:].strip("/") for line in ignore.read_text().splitlines() if line.startswith("!")
    }
    copied = {
        shlex.split(arg)[0] for op, arg in instructions if op == "COPY" and "--from" not in arg
    }
    for package in python_packages():
        assert package in copied and package in admitted, f"{image} leaves out {package}"
    exposed = {int(p) for op, arg in instructions if op == "EXPOSE" for p in arg.split()}
    assert exposed <= set().union(*(listening_ports(c, settings) for c in LISTENING_COMMANDS))


# --- docker-compose ---


def compose_services() -> dict[str, dict]:
    return compose()["services"]


def test_compose_images_are_ours_or_pinned():
    for service in compose_services().values():
        check_image(service["image"])
        if image_name(service["image"])[0] in OUR_IMAGES:
            dockerfile = DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]
            assert dockerfile.resolve() == OUR_IMAGES[image_name(service["image"])[0]].resolve()


def test_compose_streamrec_services_use_real_commands_settings_and_ports():
    services = compose_services()
    planes = {n: s for n, s in services.items() if image_name(s["image"])[0] in OUR_IMAGES}
    commands = {command_name(s["command"]) for s in planes.values()}
    assert {"stream worker", "serve", "db migrate"} <= commands
    for name, service in planes.items():
        resolve_command(service["command"])
        environment = compose_environment(service)
        unknown = set(environment) - settings_variables() - RUNTIME_VARIABLES
        assert not unknown, f"compose service {name} sets variables no code reads: {unknown}"
        settings = settings_from(environment)
        host, port = settings.kafka.bootstrap_servers.split(":")
        assert (
            f"PLAINTEXT://{host}:{port}"
            in compose_environment(services[host])["KAFKA_ADVERTISED_LISTENERS"]
        )
        assert settings.clickhouse.port in container_ports(
            services[settings.clickhouse.host]["ports"]
        )
        clickhouse_env = compose_environment(services[settings.clickhouse.host])
        assert clickhouse_env["CLICKHOUSE_USER"] == settings.clickhouse.user
        assert clickhouse_env["CLICKHOUSE_PASSWORD"] == settings.clickhouse.password
        for dependency in service.get("depends_on", {}):
            assert dependency in services
        published = container_ports(service.get("ports", []))
        assert published <= listening_ports(command_name(service["command"]), settings)
        if published:
            assert str(published.pop()) in json.dumps(service["healthcheck"]["test"])


def test_compose_gpu_jobs_reserve_a_gpu_and_use_the_gpu_image():
    services = compose_services()
    gpu = {n: s for n, s in services.items() if "gpu" in s.get("profiles", [])}
    assert {command_name(s["command"]) for s in gpu.values()} >= {"align"}
    for service in gpu.values():
        assert image_name(service["image"])[0] == "streamrec-gpu"
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] for d in devices)


def test_compose_prometheus_scrapes_the_planes_on_their_settings_ports():
    services = compose_services()
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    scraped = {}
    for target in targets:
        host, port = target.split(":")
        if host != "localhost":
            assert host in services, f"Prometheus scrapes an unknown service {host}"
            scraped[host] = int(port)
    for host, port in scraped.items():
        settings = settings_from(compose_environment(services[host]))
        assert port in listening_ports(command_name(services[host]["command"]), settings), host
    scraped_commands = {command_name(services[host]["command"]) for host in scraped}
    assert {"stream worker", "serve", "jobs page"} <= scraped_commands
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    for pattern in config.get("rule_files", []):
        folder, _, glob = pattern.rpartition("/")
        assert (DEPLOY / mounts[folder]).resolve().is_relative_to(DEPLOY / "monitoring")


def test_compose_grafana_provisions_prometheus_and_the_dashboards():
    grafana = compose_services()["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning"]
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "streamrec.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert path in mounts and mounts[path] == "./monitoring"


def docker_compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin), else the standalone `docker-compose` v2 binary
    that `./run test` builds; None when neither is here."""
    if shutil.which("docker") is not None:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


DOCKER_COMPOSE = docker_compose_command()


@pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason="neither docker compose nor docker-compose is here"
)
def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(
        [
            *DOCKER_COMPOSE,
            "-f",
            str(COMPOSE),
            "--profile",
            "gpu",
            "--profile",
            "bootstrap",
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- Kubernetes ---


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_overlay_renders_and_names_only_what_the_code_reads(overlay):
    objects = rendered(f"overlays/{overlay}")
    planes = list(our_containers(objects))
    commands = {command_name(c.get("args", [])) for _, c in planes}
    assert {"stream worker", "serve", "db migrate", "worker trainer"} <= commands
    for _, container in all_containers(objects):
        check_image(container["image"])
    for workload, container in planes:
        where = f"{overlay}: {workload['metadata']['name']}"
        resolve_command(container.get("args", []))
        environment = container_environment(container, objects)
        unknown = set(environment) - settings_variables() - RUNTIME_VARIABLES
        assert not unknown, f"{where} sets variables no code reads: {unknown}"
        settings = settings_from(environment)
        ports = {p["containerPort"] for p in container.get("ports", [])}
        name = command_name(container["args"])
        assert ports <= listening_ports(name, settings), where
        annotations = pod_template(workload)["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            assert int(annotations["prometheus.io/port"]) in listening_ports(name, settings)
        if name == "serve":
            assert container["readinessProbe"]["grpc"]["port"] == settings.serving.port
        if name == "stream worker":
            assert annotations["prometheus.io/scrape"] == "true"
            assert workload["spec"]["replicas"] <= settings.kafka.partitions
        security = pod_spec(workload).get("securityContext", {})
        assert security.get("runAsNonRoot") is True, f"{where} may run as root"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_references_resolve(overlay):
    objects = rendered(f"overlays/{overlay}")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    secrets = secret_keys(objects)
    config_files = "".join(
        v
        for o in objects
        if o["kind"] == "ConfigMap"
        for k, v in o.get("data", {}).items()
        if k.endswith(".xml")
    )
    readers = settings_variables() | from_env_names(f"<all>{_strip_roots(config_files)}</all>")
    for name, keys in secrets.items():
        unread = keys - readers
        assert not unread, f"Secret {name} holds keys nothing reads: {unread}"
    for _, container in all_containers(objects):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets
        for entry in container.get("env", []):
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                assert reference["key"] in secrets[reference["name"]]
    for workload in (o for o in objects if o["kind"] in WORKLOADS):
        for volume in pod_spec(workload).get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
            if "persistentVolumeClaim" in volume:
                assert (
                    "PersistentVolumeClaim",
                    volume["persistentVolumeClaim"]["claimName"],
                ) in names
    for workload in (o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels(workload).items(), "the API server refuses this"
        if workload["kind"] == "StatefulSet":
            governing = find(objects, "Service", workload["spec"]["serviceName"])
            assert governing["spec"]["clusterIP"] == "None", (
                "a StatefulSet needs a headless Service"
            )
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(
            selector.items() <= pod_labels(w).items() for w in objects if w["kind"] in WORKLOADS
        ), f"Service {service['metadata']['name']} selects no pod"


def _strip_roots(xml_concatenated: str) -> str:
    return re.sub(r"<\?xml[^>]*\?>", "", xml_concatenated)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_clickhouse_cluster_matches_the_generated_schema(overlay):
    objects = rendered(f"overlays/{overlay}")
    config = configmap_by_prefix(objects, "streamrec-config")["data"]
    settings = settings_from(config)
    cluster = settings.clickhouse.cluster
    assert cluster, "Kubernetes runs ClickHouse as a cluster: the schema's cluster variant"
    clickhouse_files = configmap_by_prefix(objects, "clickhouse-config")["data"]
    root = ElementTree.fromstring(clickhouse_files["cluster.xml"])
    shards = root.find(f"remote_servers/{cluster}").findall("shard")
    server = find(objects, "StatefulSet", "clickhouse")
    container = pod_spec(server)["containers"][0]
    per_shard = int(
        next(e["value"] for e in container["env"] if e["name"] == "CLICKHOUSE_REPLICAS_PER_SHARD")
    )
    hosts = []
    for number, shard in enumerate(shards, start=1):
        assert shard.findtext("internal_replication") == "true"
        for replica in shard.findall("replica"):
            host = replica.findtext("host")
            ordinal = int(re.fullmatch(r"clickhouse-(\d+)\.clickhouse-headless", host).group(1))
            assert ordinal // per_shard + 1 == number, f"{host} is not in shard {number}"
            assert int(replica.findtext("port")) == settings.clickhouse.port
            hosts.append(host)
    assert len(hosts) == server["spec"]["replicas"] == len(shards) * per_shard
    keeper = find(objects, "StatefulSet", "clickhouse-keeper")
    assert len(root.findall("zookeeper/node")) == keeper["spec"]["replicas"]
    raft = ElementTree.fromstring(clickhouse_files["keeper.xml"]).findall(
        "keeper_server/raft_configuration/server"
    )
    assert len(raft) == keeper["spec"]["replicas"]
    macros = {child.tag for child in root.find("macros")}
    statements = schema_statements(settings)
    replicated = [s for s in statements if "ReplicatedReplacingMergeTree" in s]
    distributed = [s for s in statements if f"Distributed({cluster}," in s]
    assert replicated and len(replicated) == len(distributed)
    for statement in replicated:
        assert set(re.findall(r"\{(\w+)\}", statement)) <= macros
        assert f"ON CLUSTER {cluster}" in statement
    for workload, files in ((server, ("cluster.xml", "users.xml")), (keeper, ("keeper.xml",))):
        container = pod_spec(workload)["containers"][0]
        given = {e["name"] for e in container.get("env", [])}
        given |= set(re.findall(r"export (\w+)=", " ".join(container.get("args", []))))
        for name in files:
            missing = from_env_names(clickhouse_files[name]) - given
            assert not missing, f"{name} reads variables its pods lack: {missing}"
    users = ElementTree.fromstring(clickhouse_files["users.xml"])
    assert users.find(f"users/{settings.clickhouse.user}/password").get("from_env") == (
        "STREAMREC_CLICKHOUSE__PASSWORD"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_kafka_quorum_and_partitions_fit_the_brokers(overlay):
    objects = rendered(f"overlays/{overlay}")
    settings = settings_from(configmap_by_prefix(objects, "streamrec-config")["data"])
    kafka = find(objects, "StatefulSet", "kafka")
    check_image(pod_spec(kafka)["containers"][0]["image"])
    env = {e["name"]: e.get("value") for e in pod_spec(kafka)["containers"][0]["env"]}
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == kafka["spec"]["replicas"]
    assert settings.kafka.replication_factor <= kafka["spec"]["replicas"]
    assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) <= settings.kafka.replication_factor
    host, port = settings.kafka.bootstrap_servers.split(":")
    service = find(objects, "Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}


def test_kubernetes_serving_scales_on_an_autoscaler_and_jobs_request_a_gpu():
    objects = rendered("overlays/production")
    autoscaler = find(objects, "HorizontalPodAutoscaler", "serving")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "serving"
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"] >= 2
    # A replica count beside the autoscaler would reset it on every apply.
    assert "replicas" not in find(objects, "Deployment", "serving")["spec"]
    assert not [o for o in objects if o["kind"] == "Secret"], "production must not ship secrets"
    gpu_jobs = [
        (w, c)
        for w, c in our_containers(objects)
        if c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    ]
    assert {command_name(c["args"]) for _, c in gpu_jobs} >= {"align", "worker knowledge"}
    for _, container in gpu_jobs:
        assert image_name(container["image"])[0] == "streamrec-gpu"


def test_kubernetes_monitoring_renders_with_the_dashboards_and_alerts():
    objects = rendered("monitoring")
    for _, container in all_containers(objects):
        check_image(container["image"])
    prometheus_config = yaml.safe_load(
        configmap_by_prefix(objects, "prometheus-config")["data"]["prometheus.yml"]
    )
    job = prometheus_config["scrape_configs"][0]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["streamrec"]
    dashboards = configmap_by_prefix(objects, "streamrec-dashboards")["data"]
    assert dashboards and all(json.loads(text) for text in dashboards.values())
    alerts = configmap_by_prefix(objects, "streamrec-alerts")["data"]
    assert alerts and all(yaml.safe_load(text)["groups"] for text in alerts.values())


# --- README and docs/: every command shown resolves ---


def readme_commands() -> list[str]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "".join(page.read_text() for page in pages)
    blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S)
    lines = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def grpc_method(full_name: str):
    service_name, method_name = full_name.rsplit("/", 1)
    pool = symbol_database.Default().pool
    return pool.FindServiceByName(service_name).methods_by_name[method_name]


def test_readme_commands_resolve_against_the_cli_the_api_and_the_files():
    lines = readme_commands()
    assert any(line.startswith("grpcurl") for line in lines)
    checked = 0
    for line in lines:
        # A usage synopsis: each [--option ...] group must name an option of the command.
        optional = re.findall(r"\[(--[\w-]+)[^\]]*\]", line)
        words = shlex.split(re.sub(r"\s*\[--[^\]]*\]", "", line))
        if words[0] in {"./run", "streamrec"}:
            args = words[1:] or ["up"]
            if args[0] != "test":
                command = resolve_command(args)
                known = {n for param in command.params for n in param.opts + param.secondary_opts}
                assert set(optional) <= known, line
            checked += 1
        elif words[0] == "python" and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), line
            checked += 1
        elif words[0] == "grpcurl":
            call = [w for w in words if "/" in w and not w.startswith("-") and "{" not in w]
            if call:
                method = grpc_method(call[-1])
                if "-d" in words:
                    body = words[words.index("-d") + 1]
                    message_class = symbol_database.Default().GetSymbol(method.input_type.full_name)
                    json_format.Parse(body, message_class())
            checked += 1
        elif words[:2] == ["docker", "compose"]:
            assert (ROOT / words[words.index("-f") + 1]).resolve() == COMPOSE, line
            for verb in {"run", "logs", "exec"} & set(words):
                service = next(w for w in words[words.index(verb) + 1 :] if not w.startswith("-"))
                assert service in compose_services(), line
            checked += 1
        elif words[:2] == ["kubectl", "apply"] and "-k" in words:
            assert (ROOT / words[words.index("-k") + 1] / "kustomization.yaml").exists(), line
            checked += 1
    assert checked >= 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(port: int, server: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read()
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise AssertionError("`streamrec serve` did not answer its health check")


@pytest.mark.skipif(shutil.which("grpcurl") is None, reason="grpcurl is not installed here")
def test_readme_grpcurl_calls_reach_streamrec_serve(tmp_path):
    calls = [shlex.split(line) for line in readme_commands() if line.startswith("grpcurl")]
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    environment |= {"STREAMREC_DATA_DIR": str(tmp_path), "STREAMREC_SERVING__PORT": str(port)}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamrec.cli", "serve"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_serving(port, server)
        for call in calls:
            args = [word.replace("localhost:50051", f"127.0.0.1:{port}") for word in call]
            result = subprocess.run(args, capture_output=True, text=True, timeout=30)
            output = result.stdout + result.stderr
            # Reflection resolved the method and the JSON body fit its request message:
            # the server answered, with a reply or a status of its own.
            assert "Error invoking method" not in output, (call, output)
            assert "Failed to" not in output, (call, output)
            if call[-1] == "list":
                assert "streamrec.v1.RecommenderService" in result.stdout
            elif call[-1].startswith("grpc.health.v1"):
                assert '"status": "SERVING"' in result.stdout
            else:
                assert result.returncode == 0 or "Code:" in output, (call, output)
    finally:
        server.terminate()
        server.wait(timeout=30)
