"""relay.connect: a cluster's servers in one URL setting."""

from __future__ import annotations

from relay.connect import close_nats, connect_nats, servers


def test_a_cluster_is_named_by_comma_separated_urls() -> None:
    """``MIM_NATS_URL`` names one server or several, comma-separated, spaces ignored."""
    assert servers("nats://a:4222") == ["nats://a:4222"]
    assert servers("nats://a:4222, nats://b:4222,,nats://c:4222 ") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]


async def test_the_client_connects_to_whichever_listed_server_answers(nats_url: str) -> None:
    """With a dead server listed first, the connection is made to the live one."""
    client = await connect_nats(f"nats://127.0.0.1:1,{nats_url}", "test", attempts=2, delay=0.1)
    try:
        assert client.is_connected
        assert client.connected_url is not None
        assert f"{client.connected_url.hostname}:{client.connected_url.port}" in nats_url
    finally:
        await close_nats(client)
