"""The gRPC server: every service of the wire API, health, reflection, metrics and auth.

A model family plugs in with one line in `SERVICERS`: its service name and a
factory ``"module:function"`` taking the settings and returning the servicer.
A servicer may define ``async start()`` (load a model, start watchers) and
``async stop()``; the server awaits them. A service with no factory listed is
registered with the generated base servicer, so its methods answer
UNIMPLEMENTED (rather than the server not knowing the service at all), and
reflection lists it.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving.kit import interceptors
from streamrec.settings import Settings
from streamrec.v1 import (
    genrec_pb2,
    genrec_pb2_grpc,
    ops_pb2,
    ops_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
    recsysllm_pb2,
    recsysllm_pb2_grpc,
)

log = logging.getLogger(__name__)

RECOMMENDER = recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].full_name
GENREC = genrec_pb2.DESCRIPTOR.services_by_name["GenRecService"].full_name
RECSYSLLM = recsysllm_pb2.DESCRIPTOR.services_by_name["RecSysLLMService"].full_name
OPS = ops_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name

# (service full name, registration function, default servicer)
SERVICES = (
    (
        RECOMMENDER,
        recommender_pb2_grpc.add_RecommenderServiceServicer_to_server,
        recommender_pb2_grpc.RecommenderServiceServicer,
    ),
    (
        GENREC,
        genrec_pb2_grpc.add_GenRecServiceServicer_to_server,
        genrec_pb2_grpc.GenRecServiceServicer,
    ),
    (
        RECSYSLLM,
        recsysllm_pb2_grpc.add_RecSysLLMServiceServicer_to_server,
        recsysllm_pb2_grpc.RecSysLLMServiceServicer,
    ),
    (OPS, ops_pb2_grpc.add_OpsServiceServicer_to_server, ops_pb2_grpc.OpsServiceServicer),
)

# Service full name -> "module:factory(settings) -> servicer". One line per model family.
SERVICERS: dict[str, str] = {
    RECOMMENDER: "serving.recommender:build_servicer",
    GENREC: "serving.genrec:build_servicer",
    RECSYSLLM: "serving.recsysllm:build_servicer",
    OPS: "serving.ops:build_servicer",
}


def build_servicers(settings: Settings, names: list[str] | None = None) -> dict:
    """The servicers of `SERVICERS` (all, or those named), built from the settings."""
    built = {}
    for name, target in SERVICERS.items():
        if names is not None and name not in names:
            continue
        module, function = target.split(":")
        built[name] = getattr(importlib.import_module(module), function)(settings)
    return built


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    serving = settings.serving
    if not (serving.tls_cert_file and serving.tls_key_file):
        return None
    pair = (Path(serving.tls_key_file).read_bytes(), Path(serving.tls_cert_file).read_bytes())
    client_ca = (
        Path(serving.tls_client_ca_file).read_bytes() if serving.tls_client_ca_file else None
    )
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class Server:
    """A started grpc.aio server with its servicers; `stop()` stops both."""

    def __init__(self, server: grpc.aio.Server, port: int, servicers: dict):
        self.server = server
        self.port = port
        self.servicers = servicers

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)
        for servicer in self.servicers.values():
            stop = getattr(servicer, "stop", None)
            if stop is not None:
                await stop()


async def start_server(settings: Settings, servicers: dict | None = None) -> tuple[Server, int]:
    """Build and start the server with `servicers` (by service name; the rest UNIMPLEMENTED).

    Returns it with the bound port (port 0 in the settings picks a free one).
    """
    servicers = servicers or {}
    limit = settings.serving.max_message_bytes
    server = grpc.aio.server(
        interceptors=interceptors(settings),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    names = []
    for name, register, default in SERVICES:
        register(servicers.get(name) or default(), server)
        names.append(name)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.serving.host}:{settings.serving.port}"
    credentials = _credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise RuntimeError(f"cannot bind {address}")
    for servicer in servicers.values():
        start = getattr(servicer, "start", None)
        if start is not None:
            await start()
    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "gRPC server on %s:%d (%s)",
        settings.serving.host,
        port,
        "TLS" if credentials else "plaintext",
    )
    return Server(server, port, servicers), port
