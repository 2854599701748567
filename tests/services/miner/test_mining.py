"""The mining client: service when a miner answers, this process otherwise, always bounded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from structlog.testing import capture_logs

from mim import pow as mim_pow
from relay.bus import Layout
from relay.cli.mine import _Display
from relay.cpu import CpuPool
from relay.embedded import free_port
from relay.mining import (
    MiningError,
    MiningTimeout,
    Refusal,
    Request,
    in_pool,
    mine,
    parse_request,
    service_minter,
)
from tests.helpers.procs import REPO
from tests.services.miner.conftest import StartMiner


async def test_without_a_miner_the_proof_is_mined_in_process_and_logged(
    nc: NATS, layout: Layout
) -> None:
    """With no miner listening the client mines in this process and logs why."""
    with capture_logs() as logs:
        mined = await mine(nc, "no miner here", 12, timeout=30, layout=layout)
    assert mined.where == "local"
    assert mim_pow.verify("no miner here", mined.unsigned_pow, "") == 12
    [line] = [e for e in logs if e["event"] == "pow_mining_in_process"]
    assert line["reason"] == "no miner is listening"


def test_service_minter_without_nats_mines_in_process() -> None:
    """The minter used by the CLI still answers when NATS is unreachable."""
    mint = service_minter(f"nats://127.0.0.1:{free_port()}", timeout=30)
    with capture_logs() as logs:
        pow_str = mint("offline", 10)
    assert mim_pow.verify("offline", pow_str, "") == 10
    assert any(e["event"] == "pow_nats_unreachable" for e in logs)
    assert mint("offline", 0) == ""


async def test_in_process_search_past_its_deadline_raises_a_clear_error() -> None:
    """A proof too hard for the deadline ends in `MiningTimeout`, on time."""
    with pytest.raises(MiningTimeout) as caught:
        await mine(None, "too hard", 60, timeout=0.5)
    assert caught.value.rule == "miner.deadline"


async def test_without_a_miner_a_process_pool_takes_the_search_off_this_process(
    nc: NATS, layout: Layout
) -> None:
    """Given ``local=in_pool(pool)``, the fallback search runs in a worker process, where it does
    not compete with the caller's event loop for the GIL, and its deadline still holds."""
    pool = CpuPool(1)
    try:
        mined = await mine(nc, "in a worker", 12, timeout=30, layout=layout, local=in_pool(pool))
        assert mined.where == "pool"
        assert mim_pow.verify("in a worker", mined.unsigned_pow, "") == 12
        with pytest.raises(MiningTimeout) as caught:
            await mine(None, "too hard", 60, timeout=0.5, local=in_pool(pool))
        assert caught.value.rule == "miner.deadline"
    finally:
        await pool.aclose()


async def test_a_refused_job_raises_the_miners_error(
    nc: NATS, layout: Layout, start_miner: StartMiner
) -> None:
    """A job the miner refuses raises `MiningError` naming the field and rule."""
    start_miner(MIM_MINER_MAX_TEXT_BYTES="1000")
    with pytest.raises(MiningError) as caught:
        await mine(nc, "x" * 1001, 8, timeout=10, layout=layout)
    assert (caught.value.field, caught.value.rule) == ("text", "request.text_size")


def test_cli_mine_prints_a_verifiable_pow_from_the_service(
    nats_url: str, stream_prefix: str, start_miner: StartMiner
) -> None:
    """`mimrelay mine` prints one JSON line with a PoW made by the service."""
    start_miner()
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "mine", "--difficulty", "14", "--nats-url", nats_url,
         "--prefix", stream_prefix, "cli text"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["where"] == "service"
    assert mim_pow.verify("cli text", result["pow"], "") == 14
    assert result["attempts"] > 0


def test_cli_progress_line_shows_attempts_rate_and_expected_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The progress line reads attempts, rate and the expected time of a proof."""
    show = _Display(20, enabled=True)
    show(2_097_152, 2.0)
    show.close()
    line = capsys.readouterr().err
    assert "2,097,152 attempts" in line
    assert "1,048,576/s" in line
    assert "expected 1.0 s per proof" in line


@given(st.one_of(st.binary(max_size=200), st.from_regex(rb'\{"job": "[a-z0-9]{1,8}".*\}')))
def test_any_request_bytes_parse_or_are_refused_with_a_named_rule(data: bytes) -> None:
    """Whatever bytes arrive, parsing gives a request or a `Refusal` naming field and rule."""
    try:
        request = parse_request(data, max_text_bytes=100, limit_seconds=600)
    except Refusal as exc:
        assert exc.field and exc.rule.startswith("request.")
    else:
        assert 1 <= request.difficulty <= 256 and 0 < request.deadline_s <= 600


def test_a_valid_request_round_trips() -> None:
    """A request encoded by the client parses back to itself, its deadline capped by the miner."""
    request = Request("job-1", "t\u00e9xt", 21, 900.0, split=True)
    parsed = parse_request(request.encode(), max_text_bytes=100, limit_seconds=600)
    assert parsed == Request("job-1", "t\u00e9xt", 21, 600.0, split=True)
