"""mim decodes as Go's own encoding/json decodes (PROTOCOL.md §3.2): every vector text, and
thousands of mutations of them, judged by a Go program of ours (tests/mim/go/mirror.go) that
decodes into mirrors of the reference's structs, come out as the same bytes on both sides or as an
error on both sides."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import gomirror, mutations
from tests.helpers.gomirror import Mirror, disagreement
from tests.vectors import ids, section

BASES = mutations.bases()
WIRE = section("wire_decode_cases")
#: Mutated cases per kind in the suite; bench/fuzz.py runs as many as it is given time for.
CASES_PER_KIND = 400


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    binary = gomirror.build(tmp_path_factory.mktemp("go"))
    if binary is None:
        pytest.skip(gomirror.NO_GO)
    judge = Mirror(binary)
    yield judge
    judge.close()


@pytest.mark.parametrize("record", WIRE, ids=ids(WIRE))
def test_the_go_program_decodes_as_the_reference_did(
    mirror: Mirror, record: dict[str, Any]
) -> None:
    """The Go program's structs are the reference's: it gives every recorded wire case the answer
    the reference's own decoding gave (the same bytes, or an error)."""
    answer = mirror.decode(record["entity_type"], record["wire_json"].encode())
    if record["go_decode_error"]:
        assert answer is None
    else:
        assert answer == record["go_remarshalled_json"].encode()


@pytest.mark.parametrize("kind", list(BASES))
def test_every_base_text_decodes_as_go_decodes(mirror: Mirror, kind: str) -> None:
    """Every object text of the vector file, and each address and page made from them, decodes
    in mim to the bytes Go decodes it to."""
    for text in BASES[kind]:
        found = disagreement(mirror, kind, text.encode())
        assert found is None, str(found)


@pytest.mark.parametrize("kind", gomirror.KINDS)
@settings(max_examples=CASES_PER_KIND, deadline=None)
@given(data=st.data())
def test_mutated_objects_decode_as_go_decodes(
    mirror: Mirror, kind: str, data: st.DataObject
) -> None:
    """A mutated object (key case, keys twice, unknown keys with huge numbers or deep nesting,
    escapes, surrogates, bad UTF-8, number spellings, nulls, wrong types, cut short) gives the
    same bytes in mim and in Go after decoding, or an error in both; mim raises nothing else."""
    raw = data.draw(mutations.cases(kind), label="wire")
    found = disagreement(mirror, kind, raw)
    assert found is None, str(found)
