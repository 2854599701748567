"""bench/soak_sample.py: what a soak reads from nats-server's own heap profile, on a real server."""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from relay.embedded import NatsServer, free_port
from soak_node import Node, get
from soak_sample import (
    NATS_PARTS,
    Sampler,
    _memstats,
    heap_parts,
    heap_sites,
    machine_counters,
    machine_probe_ms,
)


async def test_a_real_heap_profile_gives_its_statistics_and_the_sites_holding_memory(
    tmp_path: Path,
) -> None:
    """After a stream holds messages, the profile's statistics are read and its in-use heap is
    charged to named functions, the server's own ones among them, the shares adding up to the
    whole when every site is listed."""
    with NatsServer(tmp_path / "nats", profile_port=free_port()) as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="HELD", subjects=["held.>"]))
        for n in range(4000):
            await js.publish(f"held.{n}", b"x" * 1024)
        await nc.close()
        # gc=1: a collection first, so the profile is of now, not of up to two collections ago
        url = server.profile_url + "heap?debug=1&gc=1"
        status, body = await asyncio.to_thread(get, url, 10.0)
    assert status == 200
    profile = body.decode()
    stats = _memstats(profile)
    assert stats["HeapInuse"] > 0
    assert stats["Sys"] >= stats["HeapInuse"]
    sites = heap_sites(profile, top=1000)
    names = [site.split("% ", 1)[1] for site in sites]
    assert any(name.startswith("server.") for name in names)  # the server's own code, by name
    shares = [float(site.split("%", 1)[0]) for site in sites]
    assert shares == sorted(shares, reverse=True)
    assert 99.0 <= sum(shares) <= 101.0
    assert len(heap_sites(profile, top=3)) == min(3, len(sites))


async def test_a_soak_minute_splits_the_live_heap_of_a_real_server_into_its_parts(
    tmp_path: Path,
) -> None:
    """Messages with IDs on a stream fill its newest block's buffer and the duplicate window: a
    soak's minute reads the server's live heap and charges a share of it to each, the parts
    adding up to the whole, and reads what the server took from the system, which its resident
    memory stays under."""
    with NatsServer(tmp_path / "nats", profile_port=free_port()) as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="IDS", subjects=["ids.>"], duplicate_window=600))
        total = 40_000  # about 8 MB of IDs and entries: dozens of samples of 512 KiB
        for n in range(total):
            await nc.publish(f"ids.{n % 16}", b"x" * 200, headers={"Nats-Msg-Id": f"{n:064x}"})
        # the stream takes one connection's messages in order: once this last one is acknowledged,
        # all are stored
        await js.publish("ids.last", b"x", headers={"Nats-Msg-Id": "last"})
        assert (await js.stream_info("IDS")).state.messages == total + 1
        await nc.close()
        data = tmp_path / "a"
        data.mkdir()
        (data / "node.json").write_text(json.dumps({"nats_profile_url": server.profile_url}))
        # no traffic: only the nats-server part of a minute is read here
        sampler = Sampler([Node("A", data)], traffic=None)  # type: ignore[arg-type]
        await asyncio.to_thread(sampler._nats_heap, sampler.nodes[0], 1.0)
        status = await asyncio.to_thread(Path(f"/proc/{server.pid}/status").read_text)
    [(_, live)] = sampler.series["heap_mb:A/nats"]
    [(_, taken)] = sampler.series["sys_mb:A/nats"]
    [(_, holds)] = sampler.series["held_mb:A/nats"]
    # what the runtime took from the system holds the live heap and all the server's resident
    # memory but its mapped program; less what it handed back, it still holds the live heap
    anonymous = int(status.split("RssAnon:")[1].split()[0]) / 1024
    assert live < anonymous <= taken
    assert live < holds <= taken
    parts = {key: sampler.series[key][0][1] for key in sampler.series if key.startswith("nats_mb:")}
    assert set(parts) == {f"nats_mb:A/{part}" for part in [*NATS_PARTS, "other"]}
    assert live > 0
    assert parts["nats_mb:A/blocks"] > 0
    assert parts["nats_mb:A/dedupe"] > 0
    assert abs(sum(parts.values()) - live) < 0.01 * live
    profile = sampler.heap_profiles["A"]
    assert heap_parts(profile)["blocks"] == pytest.approx(parts["nats_mb:A/blocks"] / live)


def test_no_profile_gives_nothing() -> None:
    assert _memstats("") == {}
    assert heap_sites("") == []
    assert heap_parts("") == {}


def test_the_machine_probe_takes_longer_when_the_machine_gives_it_less() -> None:
    """The same work, timed on one core alone and then on that core shared with two busy
    processes, takes clearly longer shared: the probe sees a machine that gives less, whatever
    the node does."""
    core = min(os.sched_getaffinity(0))
    was = os.sched_getaffinity(0)
    busy: list[subprocess.Popen[bytes]] = []
    # each pins itself to the core, says so, and spins
    spin = "import os\nos.sched_setaffinity(0, {{{core}}})\nprint('busy', flush=True)\n"
    spin += "while True: pass"
    try:
        os.sched_setaffinity(0, {core})  # this thread only
        alone = machine_probe_ms()
        for _ in range(2):
            busy.append(
                subprocess.Popen(
                    [sys.executable, "-c", spin.format(core=core)], stdout=subprocess.PIPE
                )
            )
        for proc in busy:  # each is spinning before the probe starts
            assert proc.stdout is not None and proc.stdout.readline() == b"busy\n"
        shared = machine_probe_ms()
    finally:
        for proc in busy:
            proc.kill()
            proc.communicate()  # reaps it and closes its pipe
        os.sched_setaffinity(0, was)
    assert alone > 0
    assert shared > 1.5 * alone, (alone, shared)


def test_pages_read_back_from_disk_count_as_major_faults(tmp_path: Path) -> None:
    """A file whose pages were dropped from memory, then touched page by page, shows as that many
    more major faults of the machine: what the soak reads when evicted code is faulted in again."""
    pages = 2048
    size = pages * mmap.PAGESIZE
    path = tmp_path / "cold"
    path.write_bytes(os.urandom(size))
    with path.open("rb") as file:
        os.fsync(file.fileno())
        os.posix_fadvise(file.fileno(), 0, size, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
        with mmap.mmap(file.fileno(), size, prot=mmap.PROT_READ) as mapped:
            mapped.madvise(mmap.MADV_RANDOM)  # no read-ahead: a fault per page
            total, steal, before = machine_counters()
            touched = sum(mapped[n * mmap.PAGESIZE] for n in range(pages))
            total_after, steal_after, after = machine_counters()
    assert touched >= 0
    assert after - before >= pages // 2, (before, after)
    assert total_after >= total > 0
    assert 0 <= steal <= steal_after <= total_after
