"""The commands of the README and docs/ resolve against the CLI, the gRPC services and
the files, and their grpcurl lines reach a real `streamrec serve` (grpcurl is built
by `./run test` with `go install`)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import grpc
import pytest
from google.protobuf import json_format, symbol_database
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamrec.services import free_port
from streamrec.services.children import StreamrecProcess, wait_for
from tests.unit.deploy_helpers import COMPOSE, ROOT, compose_services, resolve_command

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
            if args[0] == "bench":  # ./run bench NAME: python -m bench.NAME
                assert words[0] == "./run" and (ROOT / "bench" / f"{args[1]}.py").is_file(), line
            elif args[0] != "test":
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


def serving(port: int) -> bool:
    """Whether a server on `port` answers its health check with SERVING."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.skipif(shutil.which("grpcurl") is None, reason="grpcurl is not installed here")
def test_readme_grpcurl_calls_reach_streamrec_serve(tmp_path):
    calls = [shlex.split(line) for line in readme_commands() if line.startswith("grpcurl")]
    port = free_port()
    environment = {"STREAMREC_DATA_DIR": str(tmp_path), "STREAMREC_SERVING__PORT": str(port)}
    server = StreamrecProcess(["serve"], environment, tmp_path / "serve.log")
    server.start()
    try:
        wait_for(lambda: serving(port), 60, "`streamrec serve` to answer its health check", server)
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
        server.stop()
