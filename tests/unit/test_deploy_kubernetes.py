"""The Kubernetes manifests, rendered by kustomize (`./run test` builds it with
`go install`), name only images, ports, variables, secrets and commands the code reads."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree

import pytest
import yaml

from streamrec.db import schema_statements
from tests.unit.deploy_helpers import (
    OVERLAYS,
    RUNTIME_VARIABLES,
    WORKLOADS,
    all_containers,
    check_image,
    command_name,
    configmap_by_prefix,
    container_environment,
    find,
    from_env_names,
    image_name,
    listening_ports,
    our_containers,
    pod_labels,
    pod_spec,
    pod_template,
    rendered,
    resolve_command,
    secret_keys,
    settings_from,
    settings_variables,
)

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
