from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nextbest.catalog import bundled_catalog_path
from nextbest.client import NextbestClient
from nextbest.server import NextbestServer
from nextbest.settings import Settings


@pytest.fixture(scope="session")
def plain_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled catalog without its experiments, so pipeline tests do not depend on which arm a random
    test user lands in (experiment tests use catalogs of their own)."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    data.pop("experiments", None)
    path = tmp_path_factory.mktemp("catalog") / "plain.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def server(migrated: str, plain_catalog: Path) -> Iterator[NextbestServer]:
    settings = Settings(port=0, database_url=migrated, catalog=plain_catalog, workers=8, health_interval=0.2)
    srv = NextbestServer(settings)
    srv.start()
    # SERVING comes with the health monitor's first database check: a test that asks at once must not race it.
    with NextbestClient(srv.address, timeout=10.0) as c:
        c.wait_until_serving(timeout=10.0)
    yield srv
    srv.stop(grace=1.0)


@pytest.fixture(scope="session")
def client(server: NextbestServer) -> Iterator[NextbestClient]:
    with NextbestClient(server.address, timeout=10.0) as c:
        c.wait_until_serving(timeout=10.0)
        yield c
