"""amqps:// against a real RabbitMQ TLS listener: a node of our own with a throw-away CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from sensord.amqp.failover import NodeRing, connect_robust
from sensord.amqp.settings import AmqpSettings
from sensord.testing.rabbitmq import RabbitCluster, missing
from tests.support import make_tls_files


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RabbitCluster, Path]]:
    if (why := missing()) is not None:
        pytest.skip(why)
    pki = tmp_path_factory.mktemp("pki")
    # the node's certificate names localhost only: 127.0.0.1 fails the host name check
    files = make_tls_files(pki, server_san="DNS:localhost")
    with RabbitCluster(1, name="sensord-tls", tls=files) as node:
        yield node, pki


def _settings(node: RabbitCluster, pki: Path, **extra: object) -> AmqpSettings:
    url = node.nodes[0].tls_url
    assert url is not None
    return AmqpSettings.model_validate({"url": url, "ca_file": pki / "ca.pem", **extra})


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_amqps_with_a_client_certificate_and_password_file(
    tls_node: tuple[RabbitCluster, Path], tmp_path: Path
) -> None:
    node, pki = tls_node
    pw = tmp_path / "amqp-password"
    pw.write_text("guest\n")
    url = node.nodes[0].tls_url
    assert url is not None
    s = AmqpSettings.model_validate(
        {
            "url": url.replace("guest:guest@", ""),  # credentials from the files only
            "ca_file": pki / "ca.pem",
            "cert_file": pki / "client.pem",
            "key_file": pki / "client.key",
            "username": "guest",
            "password_file": pw,
        }
    )
    ring = NodeRing(s, "tls")
    conn = await connect_robust(s, ring, timeout=10)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue("", exclusive=True)
        await ch.default_exchange.publish(aio_pika.Message(b"over tls"), routing_key=q.name)
        msg = await q.get(timeout=5)
        assert msg.body == b"over tls"
        assert ring.connected == f"localhost:{node.nodes[0].tls_port}"
    finally:
        await conn.close()


@pytest.mark.e2e
async def test_an_unknown_ca_is_refused(
    tls_node: tuple[RabbitCluster, Path], tmp_path: Path
) -> None:
    node, _ = tls_node
    other = make_tls_files(
        tmp_path, server_san="DNS:localhost"
    )  # another CA: the node's certificate is not from it
    s = _settings(node, tmp_path).model_copy(update={"ca_file": other.ca})
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await connect_robust(s, NodeRing(s, "tls"), timeout=10)


@pytest.mark.e2e
async def test_tls_insecure_skips_the_host_name_check_only(
    tls_node: tuple[RabbitCluster, Path],
) -> None:
    node, pki = tls_node
    port = node.nodes[0].tls_port
    # the same node by a name its certificate does not hold (DNS:localhost only)
    wrong_host = {"url": f"amqps://guest:guest@127.0.0.1:{port}/", "ca_file": pki / "ca.pem"}
    s = AmqpSettings.model_validate(wrong_host)
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|match|mismatch"):
        await connect_robust(s, NodeRing(s, "tls"), timeout=10)
    s = AmqpSettings.model_validate({**wrong_host, "tls_insecure": True})
    conn = await connect_robust(s, NodeRing(s, "tls"), timeout=10)
    await conn.close()
