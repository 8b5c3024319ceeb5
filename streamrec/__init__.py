"""streamrec's shared kernel: settings, CLI, ClickHouse, registry, assets, local services."""

__version__ = "0.1.0"
