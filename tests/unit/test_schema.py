"""The ClickHouse schema: the shared SQL subset, dedup keys, and the cluster variant."""

import re

from streamrec.db import TABLES, schema_statements
from streamrec.settings import ClickHouseSettings, Settings

# Features that ClickHouse 18.16 lacks; the schema must not use them.
NEWER_FEATURES = ("DateTime64", "LowCardinality", "TTL", "CODEC", "OVER (")


def test_every_table_is_created_once_and_idempotently():
    statements = schema_statements(Settings())
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS streamrec"
    created = [re.search(r"streamrec\.(\w+)", s).group(1) for s in statements[1:]]
    assert created == [t.name for t in TABLES]
    assert {"interactions", "items", "item_knowledge", "job_runs", "model_versions"} <= set(created)
    assert all("IF NOT EXISTS" in s for s in statements)


def test_schema_uses_only_sql_that_clickhouse_18_understands():
    for statement in schema_statements(Settings()):
        for feature in NEWER_FEATURES:
            assert feature not in statement, (feature, statement)


def test_interactions_collapse_on_event_id_and_read_per_user():
    interactions = next(t for t in TABLES if t.name == "interactions")
    assert interactions.order_by.startswith("(user_id")
    assert "event_id" in interactions.order_by
    assert interactions.version_column == "ingested_ms"


def test_cluster_variant_emits_replicated_local_and_distributed_tables():
    settings = Settings(clickhouse=ClickHouseSettings(cluster="prod"))
    statements = schema_statements(settings)
    assert statements[0].endswith("ON CLUSTER prod")
    for table in TABLES:
        local = next(s for s in statements if f"streamrec.{table.name}_local " in s)
        assert "ReplicatedReplacingMergeTree(" in local and "ON CLUSTER prod" in local
        distributed = next(s for s in statements if f"streamrec.{table.name} ON CLUSTER" in s)
        assert f"Distributed(prod, streamrec, {table.name}_local" in distributed
