"""Fixtures: the real local Kafka and ClickHouse, started once per test session.

Tests under tests/integration and tests/e2e are marked `integration` (deselect
them with `-m "not integration"`) and get a running broker and database in a
temporary data directory; the Kafka jars come from the shared cache, so only
the first run ever fetches them.
"""

from __future__ import annotations

import os

# As `streamrec` runs by default (streamrec.logs): gRPC's C core prints only errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from pathlib import Path

import pytest

from streamrec.services import LocalServices
from streamrec.services.children import services_environment
from streamrec.settings import Settings

TESTS = Path(__file__).parent
SERVICE_FOLDERS = {"integration", "e2e"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.is_relative_to(TESTS):
            if item.path.relative_to(TESTS).parts[0] in SERVICE_FOLDERS:
                item.add_marker(pytest.mark.integration)


class RunningServices:
    """The started services, and settings that point straight at them."""

    def __init__(self, launcher: LocalServices):
        self.launcher = launcher
        self.base = launcher.settings
        self.settings = launcher.connected_settings()

    def environment(self) -> dict[str, str]:
        """Variables that make a `streamrec` subprocess use these services."""
        return services_environment(self.launcher)


@pytest.fixture(scope="session")
def services(tmp_path_factory) -> RunningServices:
    launcher = LocalServices(Settings(data_dir=tmp_path_factory.mktemp("streamrec-data")))
    try:
        launcher.start()
        yield RunningServices(launcher)
    finally:
        launcher.stop()


@pytest.fixture(scope="module")
def torch_on_one_thread():
    """A module's tiny models on one torch thread, restored after the module; a module asks
    with `pytestmark = pytest.mark.usefixtures("torch_on_one_thread")`."""
    from tests.threads import one_torch_thread  # torch imported only where it is asked for

    with one_torch_thread():
        yield
