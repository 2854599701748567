"""deploy/nginx/mimrelay.conf run by a real nginx in front of two real gateway replicas."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.embedded import free_port
from tests.deploy.manifests import DEPLOY
from tests.helpers.gateway import Gateway, replica
from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template, wait_until
from tests.services.gateway.conftest import sample, store
from tests.services.gateway.crawler import crawl

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
CONF = DEPLOY / "nginx" / "mimrelay.conf"
MAIN = """
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    include {root}/mimrelay.conf;
}}
"""

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx)"
)


@pytest.fixture
def database_template_setup() -> TemplateSetup | None:
    return migrate_template


@pytest.fixture
def nginx_for(tmp_path: Path) -> Iterator[object]:
    """Start nginx with the shipped server configuration, its upstream the given replicas
    instead of compose's service name; returns its URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(replicas: list[Gateway]) -> str:
        root = tmp_path / "nginx"
        (root / "tmp").mkdir(parents=True)
        port = free_port()
        servers = "".join(
            f"    server {r.url.removeprefix('http://')} max_fails=1 fail_timeout=10s;\n"
            for r in replicas
        )
        conf = re.sub(r"^\s*server gateway:8090[^\n]*\n", servers, CONF.read_text(), flags=re.M)
        conf = re.sub(r"^(\s*)listen 8090;", rf"\1listen 127.0.0.1:{port};", conf, flags=re.M)
        (root / "mimrelay.conf").write_text(conf)
        (root / "nginx.conf").write_text(MAIN.format(root=root))
        assert NGINX is not None
        argv = [NGINX, "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")]
        started.append(subprocess.Popen(argv))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v0/status", timeout=1)
                return f"http://127.0.0.1:{port}"
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError((root / "error.log").read_text())

    yield start
    for proc in started:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(10)


async def test_nginx_serves_every_replica_and_passes_over_a_dead_one(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path, nginx_for: object
) -> None:
    """Through the shipped nginx configuration the crawler verifies every page, all from one
    replica (a remote stays on one); with that replica killed, the next crawl through nginx
    still verifies every page, from the other."""
    now = int(time.time())
    objects = sample(now - 600)
    await store(fresh_database, objects, now - 300)
    with (
        replica(nats_url, fresh_database, stream_prefix, tmp_path / "a") as a,
        replica(nats_url, fresh_database, stream_prefix, tmp_path / "b") as b,
    ):
        assert callable(nginx_for)
        url = nginx_for([a, b])

        async def both_serving() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                answers = [await client.get(f"{r.url}/v0/c0/posts/index.json") for r in (a, b)]
            return all(answer.status_code == 200 for answer in answers)

        await wait_until("both replicas serving caches", both_serving)
        earlier = [_cache_pages_served(r) for r in (a, b)]
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            before = await crawl(client)
        served = [_cache_pages_served(r) - n for r, n in zip((a, b), earlier, strict=True)]
        answering = a if served[0] > served[1] else b  # nginx keeps one remote on one replica
        answering.proc.send(signal.SIGKILL)
        answering.proc.wait(10)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            after = await crawl(client)
    assert min(served) == 0 < max(served)
    wanted = {o.fingerprint for o in objects}
    assert {fp for found in before.objects.values() for fp in found} == wanted
    assert {fp for found in after.objects.values() for fp in found} == wanted


def _cache_pages_served(one: Gateway) -> float:
    return one.metric("mim_gateway_requests_total", route="cache", status="200")
