"""The ClickHouse schema, in the SQL that ClickHouse 18.16 and current releases share.

No DateTime64, LowCardinality, TTL or CODEC. Every table is a
ReplacingMergeTree whose sorting key identifies a row (the event_id for
events), so a redelivered row collapses into one; readers deduplicate with
FINAL or argMax. Timestamps are DateTime plus an Int64 millisecond column
where order within a second matters.

With `settings.clickhouse.cluster` set, every table is created ON CLUSTER as a
Replicated*MergeTree local table plus a Distributed table of the plain name,
which is what readers and writers use.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamrec.settings import Settings


@dataclass(frozen=True)
class Table:
    name: str
    columns: str
    version_column: str
    order_by: str
    partition_by: str = ""
    # Distributed tables shard on this expression.
    shard_key: str = "rand()"
    # Columns added after the table's first release (also in `columns`): a table created
    # before gets them by ALTER.
    added_columns: tuple[str, ...] = ()


TABLES: tuple[Table, ...] = (
    Table(
        name="interactions",
        columns="""
            event_id String,
            user_id Int64,
            item_id Int64,
            event_type UInt8,
            value Nullable(Float64),
            timestamp DateTime,
            timestamp_ms Int64,
            context_keys Array(String),
            context_values Array(String),
            source_partition Int32,
            source_offset Int64,
            ingested_ms Int64
        """,
        version_column="ingested_ms",
        # Per-user history reads scan one user's rows in time order; the
        # event_id at the end makes the key unique so duplicates collapse.
        # Events of one millisecond keep their arrival order: one user's
        # events share a Kafka partition, so the source offset orders them.
        order_by="(user_id, timestamp_ms, event_id)",
        partition_by="toYYYYMM(timestamp)",
        shard_key="user_id",
    ),
    Table(
        name="event_ids",
        # The first content stored under each interaction's event_id, whatever partition
        # it came from (streams/identity.py): a later event reusing the id with other
        # content is refused. Looked up by event_id, so it is the sorting key; the
        # earliest row wins a merge (`precedence` falls as `ingested_ms` grows).
        columns="""
            event_id String,
            fingerprint UInt64,
            user_id Int64,
            source_partition Int32,
            source_offset Int64,
            ingested_ms Int64,
            precedence UInt64
        """,
        version_column="precedence",
        order_by="event_id",
        shard_key="cityHash64(event_id)",
    ),
    Table(
        name="items",
        columns="""
            item_id Int64,
            title String,
            year Int32,
            categories Array(String),
            description String,
            attribute_keys Array(String),
            attribute_values Array(String),
            deleted UInt8,
            updated_ms Int64
        """,
        version_column="updated_ms",
        order_by="item_id",
        shard_key="item_id",
    ),
    Table(
        name="item_knowledge",
        columns="""
            item_id Int64,
            llm_version String,
            prompt_version String,
            text String,
            vector Array(Float32),
            created_at DateTime,
            created_ms Int64
        """,
        version_column="created_ms",
        order_by="(item_id, llm_version, prompt_version)",
        shard_key="item_id",
    ),
    Table(
        name="job_runs",
        columns="""
            run_id String,
            kind String,
            status String,
            started_at DateTime,
            finished_at DateTime,
            items_ok UInt64,
            items_failed UInt64,
            items_skipped UInt64,
            items_per_s Float64,
            llm_version String,
            error String,
            updated_ms Int64,
            stats String
        """,
        version_column="updated_ms",
        order_by="(kind, run_id)",
        added_columns=("stats String",),
    ),
    Table(
        name="job_logs",
        # The last lines a run logged (streamrec.jobs), rewritten with each heartbeat.
        columns="""
            run_id String,
            kind String,
            tail String,
            updated_ms Int64
        """,
        version_column="updated_ms",
        order_by="run_id",
    ),
    Table(
        name="knowledge_targets",
        # The LLM and prompt versions each knowledge run gives knowledge for: the newest
        # is what coverage is measured against (streamrec/coverage.py).
        columns="""
            run_id String,
            llm_version String,
            prompt_version String,
            started_ms Int64
        """,
        version_column="started_ms",
        order_by="run_id",
    ),
    Table(
        name="knowledge_failures",
        # An item the knowledge job could not give knowledge, with the reason (the newest
        # failure per item and versions is kept).
        columns="""
            item_id Int64,
            llm_version String,
            prompt_version String,
            run_id String,
            reason String,
            failed_ms Int64
        """,
        version_column="failed_ms",
        order_by="(llm_version, prompt_version, item_id)",
        shard_key="item_id",
    ),
    Table(
        name="ops_samples",
        # The status page's sampler: consumer lag per group and dead letters per reason,
        # one row per figure and sample, so the page can draw the last hours.
        columns="""
            figure String,
            label String,
            sampled_ms Int64,
            value Float64
        """,
        version_column="sampled_ms",
        order_by="(figure, label, sampled_ms)",
    ),
    Table(
        name="model_versions",
        columns="""
            model String,
            version String,
            path String,
            created_at DateTime,
            metrics String,
            llm_version String,
            adapter_version String,
            status String,
            updated_ms Int64
        """,
        version_column="updated_ms",
        order_by="(model, version)",
    ),
)


def _create_table(table: Table, database: str, cluster: str) -> list[str]:
    columns = " ".join(table.columns.split())
    partition = f" PARTITION BY {table.partition_by}" if table.partition_by else ""
    if not cluster:
        return [
            f"CREATE TABLE IF NOT EXISTS {database}.{table.name} ({columns}) "
            f"ENGINE = ReplacingMergeTree({table.version_column}){partition} "
            f"ORDER BY {table.order_by}"
        ]
    local = f"{table.name}_local"
    engine = (
        f"ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{database}/{local}', "
        f"'{{replica}}', {table.version_column})"
    )
    return [
        f"CREATE TABLE IF NOT EXISTS {database}.{local} ON CLUSTER {cluster} ({columns}) "
        f"ENGINE = {engine}{partition} ORDER BY {table.order_by}",
        f"CREATE TABLE IF NOT EXISTS {database}.{table.name} ON CLUSTER {cluster} "
        f"AS {database}.{local} "
        f"ENGINE = Distributed({cluster}, {database}, {local}, {table.shard_key})",
    ]


def schema_statements(settings: Settings) -> list[str]:
    """Every DDL statement, in order; each is safe to run again."""
    database = settings.clickhouse.database
    cluster = settings.clickhouse.cluster
    on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
    statements = [f"CREATE DATABASE IF NOT EXISTS {database}{on_cluster}"]
    for table in TABLES:
        statements.extend(_create_table(table, database, cluster))
    return statements


def _add_columns(client, settings: Settings) -> None:
    """Columns added to a table after its first release, on a table made before them
    (ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: system.columns says what is there)."""
    database, cluster = settings.clickhouse.database, settings.clickhouse.cluster
    on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
    for table in TABLES:
        names = [f"{table.name}_local", table.name] if cluster else [table.name]
        for name in names:
            present = {
                column
                for (column,) in client.execute(
                    "SELECT name FROM system.columns WHERE database = %(db)s AND table = %(t)s",
                    {"db": database, "t": name},
                )
            }
            for column in table.added_columns:
                if column.split()[0] not in present:
                    client.execute(f"ALTER TABLE {database}.{name}{on_cluster} ADD COLUMN {column}")


def migrate(settings: Settings) -> list[str]:
    """Apply the schema idempotently; returns the tables that exist afterwards."""
    from streamrec.db.client import connect

    client = connect(settings, database="")
    try:
        for statement in schema_statements(settings):
            client.execute(statement)
        _add_columns(client, settings)
        rows = client.execute(
            "SELECT name FROM system.tables WHERE database = %(db)s ORDER BY name",
            {"db": settings.clickhouse.database},
        )
    finally:
        client.disconnect()
    return [name for (name,) in rows]
