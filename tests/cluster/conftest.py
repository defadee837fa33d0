"""One local 3-node RabbitMQ cluster (sensord.testing.rabbitmq) shared by the cluster tests
of a session: it takes ~25 s to form on 2 cores. A test that kills or stops nodes brings
them back before it ends (`healed`), so that the next one finds three."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sensord.testing.rabbitmq import RabbitCluster, missing


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    if (why := missing()) is not None:
        pytest.skip(why)
    with RabbitCluster(3) as cluster:
        yield cluster


@pytest.fixture
def cluster(rabbit_cluster: RabbitCluster) -> Iterator[RabbitCluster]:
    yield rabbit_cluster
    for node in rabbit_cluster.nodes:
        if node.pid is None:
            rabbit_cluster.restart(node)
    rabbit_cluster.wait_clustered(60)
