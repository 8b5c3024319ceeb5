"""Every deploy file parses; the Dockerfiles and docker-compose agree with the code
(images, commands, settings, ports), and docker compose itself accepts the file
(`./run test` builds docker-compose v2 with `go install`)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

from streamrec.assets import ENCODER_NAME, LLM_NAME
from tests.unit.deploy_helpers import (
    COMPOSE,
    DEPLOY,
    LISTENING_COMMANDS,
    OUR_IMAGES,
    ROOT,
    RUNTIME_VARIABLES,
    check_image,
    command_name,
    compose_environment,
    compose_services,
    container_ports,
    deploy_files,
    image_name,
    listening_ports,
    resolve_command,
    settings_from,
    settings_variables,
)


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
