"""The stream plane: topics, the producer SDK, the faust app and the ClickHouse sink."""
