"""A small client for apps: recommendations over gRPC in one call.

    from streamrec.client import RecommenderClient
    with RecommenderClient("127.0.0.1:50051") as client:
        for item in client.recommend(user_id=42, k=10).items:
            print(item.item_id, item.score)

Token and TLS follow the server's settings: `token=` adds
`authorization: Bearer <token>` to every call, `root_certificates=` (PEM
bytes) switches to TLS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from streamrec.settings import Settings
from streamrec.v1 import recommender_pb2, recommender_pb2_grpc


@dataclass(frozen=True)
class Recommendations:
    items: list[recommender_pb2.ScoredItem]
    model_version: str
    cold_start: bool

    @property
    def item_ids(self) -> list[int]:
        return [item.item_id for item in self.items]


class RecommenderClient:
    def __init__(
        self,
        target: str,
        token: str | None = None,
        root_certificates: bytes | None = None,
        timeout_s: float = 5.0,
    ):
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials)
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = recommender_pb2_grpc.RecommenderServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings, host: str | None = None) -> RecommenderClient:
        """A client of the server these settings describe (its first token, its TLS cert)."""
        serving = settings.serving
        certificate = None
        if serving.tls_cert_file:
            with open(serving.tls_cert_file, "rb") as handle:
                certificate = handle.read()
        return cls(
            f"{host or serving.host}:{serving.port}",
            token=serving.auth_tokens[0] if serving.auth_tokens else None,
            root_certificates=certificate,
        )

    def recommend(
        self,
        user_id: int = 0,
        k: int = 10,
        history: Sequence[int] = (),
        exclude: Sequence[int] = (),
        candidates: Sequence[int] = (),
        include_seen: bool = False,
        timeout_s: float | None = None,
    ) -> Recommendations:
        """Top `k` items for a known user, or for an explicit `history` (item ids, oldest first).

        Raises `grpc.RpcError`; INVALID_ARGUMENT's details say what was wrong.
        """
        reply = self._stub.Recommend(
            recommender_pb2.RecommendRequest(
                user_id=user_id,
                k=k,
                history=list(history),
                exclude_item_ids=list(exclude),
                candidate_item_ids=list(candidates),
                include_seen=include_seen,
            ),
            timeout=timeout_s or self.timeout_s,
            metadata=self._metadata,
        )
        return Recommendations(list(reply.items), reply.model_version, reply.cold_start)

    def health(self, timeout_s: float | None = None) -> str:
        """The server's overall status from the standard health service: `SERVING` once its
        services are up. Raises `grpc.RpcError` when it does not answer."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        reply = health_pb2_grpc.HealthStub(self._channel).Check(
            health_pb2.HealthCheckRequest(),
            timeout=timeout_s or self.timeout_s,
            metadata=self._metadata,
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
