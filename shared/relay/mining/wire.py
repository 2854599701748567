"""The miners' wire format (see :mod:`relay.mining`): requests, replies, and their errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import mim.errors
import mim.pow
from relay import RelayError

PROGRESS_SECONDS: Final = 1.0  # a miner reports progress on a job at least this often
SILENCE_SECONDS: Final = 5.0  # a requester hearing nothing for this long sends the job again
CHUNK_ATTEMPTS: Final = 50_000  # attempts per search call (~0.05 s): cancel and deadline checks
_JOB_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_JOB_ID_MAX: Final = 64  # a subject token of relay.bus
RETRYABLE: Final = frozenset({"miner.shutdown", "miner.busy"})
"""Error rules after which a requester sends the job again."""

Progress = Callable[[int, float], None]
"""Called with (attempts so far, seconds so far) while a job runs."""


class MiningError(RelayError):
    """No proof: a miner refused the job or the search failed; names field, rule and detail."""

    def __init__(self, field: str, rule: str, detail: str) -> None:
        super().__init__(f"{field}: {detail} ({rule})")
        self.field = field
        self.rule = rule
        self.detail = detail

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "detail": self.detail}


class MiningTimeout(MiningError):
    """The deadline passed before a proof was found."""


class Refusal(MiningError):
    """A request the miner will not take; its ``as_dict()`` is the error reply."""


class Mined(NamedTuple):
    """A found proof: the unsigned PoW string, the attempts it took, and where it was mined.

    For a split job ``attempts`` counts every miner's work as last reported.
    """

    unsigned_pow: str
    attempts: int
    where: str  # "service", "local" (a thread) or "pool" (a worker process of ours)


@dataclass(frozen=True, slots=True)
class Request:
    """One valid mining request."""

    job: str
    text: str
    difficulty: int
    deadline_s: float
    split: bool = False

    def encode(self) -> bytes:
        return json.dumps(
            {
                "job": self.job,
                "text": self.text,
                "difficulty": self.difficulty,
                "deadline_s": self.deadline_s,
                "split": self.split,
            }
        ).encode()


def _job_of(raw: dict[str, Any]) -> str:
    job = raw.get("job")
    if not isinstance(job, str) or not 0 < len(job) <= _JOB_ID_MAX or set(job) - _JOB_ID_CHARS:
        raise Refusal("job", "request.job", f"must be 1-{_JOB_ID_MAX} of [a-z0-9_-]")
    return job


def _difficulty_of(raw: dict[str, Any]) -> int:
    value = raw.get("difficulty")
    if not isinstance(value, int) or isinstance(value, bool):
        raise Refusal("difficulty", "request.difficulty", f"{value!r} is not an integer")
    if not 1 <= value <= mim.pow.MAX_DIFFICULTY:
        detail = f"{value} is outside 1..{mim.pow.MAX_DIFFICULTY}"
        raise Refusal("difficulty", "request.difficulty", detail)
    return value


def _text_of(raw: dict[str, Any], max_text_bytes: int) -> str:
    text = raw.get("text")
    if not isinstance(text, str):
        raise Refusal("text", "request.text", f"must be a string, not {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_text_bytes:
        raise Refusal("text", "request.text_size", f"{size} bytes is over {max_text_bytes}")
    return text


def _deadline_of(raw: dict[str, Any], limit: float) -> float:
    value = raw.get("deadline_s", limit)
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise Refusal("deadline_s", "request.deadline", f"{value!r} is not a positive number")
    return min(float(value), limit)


def parse_request(data: bytes, *, max_text_bytes: int, limit_seconds: float) -> Request:
    """The request in ``data``, its deadline capped at ``limit_seconds``; ``Refusal`` otherwise."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refusal("request", "request.json", f"not a JSON document: {exc}") from exc
    if not isinstance(raw, dict):
        raise Refusal("request", "request.json", f"must be an object, not {type(raw).__name__}")
    split = raw.get("split", False)
    if not isinstance(split, bool):
        raise Refusal("split", "request.split", f"{split!r} is not true or false")
    return Request(
        job=_job_of(raw),
        text=_text_of(raw, max_text_bytes),
        difficulty=_difficulty_of(raw),
        deadline_s=_deadline_of(raw, limit_seconds),
        split=split,
    )


def job_of(data: bytes) -> str | None:
    """The job id of a maybe invalid request, to address its error reply (``None``: unreadable)."""
    try:
        raw = json.loads(data)
        return _job_of(raw) if isinstance(raw, dict) else None
    except (UnicodeDecodeError, json.JSONDecodeError, Refusal):
        return None


def encode_found(
    job: str, salt: str, counter: int, attempts: int, seconds: float, miner: str
) -> bytes:
    reply = {
        "job": job,
        "salt": salt,
        "counter": counter,
        "attempts": attempts,
        "seconds": seconds,
        "miner": miner,
    }
    return json.dumps(reply).encode()


def encode_progress(job: str, attempts: int, seconds: float, miner: str) -> bytes:
    report = {"attempts": attempts, "seconds": seconds, "miner": miner}
    return json.dumps({"job": job, "progress": report}).encode()


def encode_error(job: str | None, error: MiningError) -> bytes:
    return json.dumps({"job": job, "error": error.as_dict()}).encode()
