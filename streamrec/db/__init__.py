"""ClickHouse: the schema every plane shares and a client factory."""

from streamrec.db.client import connect, count_rows
from streamrec.db.schema import TABLES, migrate, schema_statements

__all__ = ["TABLES", "connect", "count_rows", "migrate", "schema_statements"]
