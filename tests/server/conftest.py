from __future__ import annotations

from collections.abc import Iterator

import pytest

from nextbest.client import NextbestClient
from nextbest.server import NextbestServer
from nextbest.settings import Settings


@pytest.fixture(scope="session")
def server(migrated: str) -> Iterator[NextbestServer]:
    srv = NextbestServer(Settings(port=0, database_url=migrated, workers=8, health_interval=0.2))
    srv.start()
    yield srv
    srv.stop(grace=1.0)


@pytest.fixture(scope="session")
def client(server: NextbestServer) -> Iterator[NextbestClient]:
    with NextbestClient(server.address, timeout=10.0) as c:
        c.wait_until_serving(timeout=10.0)
        yield c
