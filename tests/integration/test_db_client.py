"""The ClickHouse client pings the server only before a query on an idle connection."""

from __future__ import annotations

from streamrec.db import connect
from streamrec.db.client import PING_AFTER_IDLE_S


def test_a_busy_connection_skips_the_ping_and_an_idle_one_pings(services):
    client = connect(services.settings, database="")
    pings = []
    connection = client.connection
    ping = connection.ping
    connection.ping = lambda: pings.append(1) or ping()
    try:
        for _ in range(20):
            assert client.execute("SELECT 1") == [(1,)]
        assert pings == []  # the first query connects; the next 19 follow it closely
        connection.checked_at -= PING_AFTER_IDLE_S + 1  # as if idle since
        assert client.execute("SELECT 2") == [(2,)]
        assert pings == [1]
    finally:
        client.disconnect()
