"""The one parser of submitted items and the files they come in: wrappers and bare objects, kinds
from the fields, text kept as written, and lines cut at LF only."""

from __future__ import annotations

import json
import random

import pytest

from mim import canonical
from mim import pow as mim_pow
from mim.create import create
from mim.entities import Provable
from mim.errors import MalformedJSON
from relay.wrapped import split, unwrap, wrap
from tests.vectors import section

POST = next(r["object_json"] for r in section("entities") if r["entity_type"] == "post")
KEY = next(r["object_json"] for r in section("entities") if r["entity_type"] == "key")


def post(body: str) -> Provable:
    """An anonymous post with ``body`` (no proof: only its text matters here)."""
    where = {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64, "body": body}
    return create(
        "post", where, None, 0, 1_700_000_000, mim_pow.local_minter(random.Random(1).randrange)
    )


def test_wrapper_and_bare_object_give_the_kind_and_the_text_as_written() -> None:
    """A wrapper's object comes back byte for byte, spacing and escapes kept; a bare object's
    kind comes from its fields; an export line reads back as it was written."""
    spaced = '{ "kind" : "POST", "object" : { "body" : "\\u00e9" , "parent": "p" } }'
    assert unwrap(spaced) == ("post", '{ "body" : "\\u00e9" , "parent": "p" }')
    assert unwrap(f"  {KEY}\r") == ("key", KEY)
    assert unwrap(wrap("post", POST)) == ("post", POST)


def test_a_forced_kind_applies_to_bare_objects_only() -> None:
    """`kind` decides for an object whose fields fit several kinds; a wrapper keeps its own."""
    assert unwrap('{"body": "hi"}', "thread").kind == "thread"
    assert unwrap(wrap("post", '{"body": "hi"}'), "thread").kind == "post"


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        ("not json", "object", "json.syntax"),
        ('{"body": "x"} {"body": "y"}', "object", "json.syntax"),
        ('["a"]', "object", "json.type"),
        ('{"body": NaN}', "object", "json.syntax"),
        ('{"kind": "comment", "object": {}}', "kind", "kind.known"),
        ('{"kind": "post", "object": "text"}', "object", "json.type"),
        ('{"body": "fits a thread and a post"}', "kind", "kind.ambiguous"),
        ('{"parent": "p", "domain": "d"}', "kind", "kind.unknown"),
    ],
)
def test_broken_items_name_the_field_and_the_rule(text: str, field: str, rule: str) -> None:
    """Each way an item can be broken is refused as malformed, naming the field and the rule."""
    with pytest.raises(MalformedJSON) as refused:
        unwrap(text)
    assert (refused.value.field, refused.value.rule) == (field, rule)


def unescaped(text: str) -> str:
    return text.replace("\\u2028", "\u2028").replace("\\u2029", "\u2029")


def test_lines_are_cut_at_lf_only() -> None:
    """Posts whose bodies hold U+0085, U+2028 and U+2029 raw, and a line with CR as white space,
    stay one item each; blank lines are skipped and line numbers kept."""
    bodies = ["next\u0085line", "line\u2028separator", "paragraph\u2029separator"]
    # canonical JSON escapes U+2028 and U+2029; another writer may leave them raw, as JSON allows
    lines = [unescaped(canonical.dumps(post(body))) for body in bodies]
    assert all(len(line.splitlines()) == 2 for line in lines)  # where str.splitlines cuts
    text = "\n".join(lines) + "\n\n" + '{"fingerprint":"f",\r"parent":"p"}\r\n'
    items = split(text.encode())
    assert [where for where, _ in items] == ["line 1", "line 2", "line 3", "line 5"]
    assert [unwrap(t).body for _, t in items[:3]] == lines
    assert unwrap(items[3][1]) == ("post", '{"fingerprint":"f",\r"parent":"p"}')


def test_arrays_documents_and_undecodable_bytes() -> None:
    """An array gives its elements as written, an indented document itself, and bytes that are
    not UTF-8 come back unchanged through `surrogateescape`."""
    assert split(f"[ {POST} ,\n {KEY} ]".encode()) == [("element 1", POST), ("element 2", KEY)]
    indented = json.dumps(json.loads(KEY), indent=2)
    assert split(indented.encode()) == [("the document", indented)]
    raw = b'{"body": "\xff"}'
    ((_, text),) = split(raw)
    assert text.encode("utf-8", "surrogateescape") == raw
    with pytest.raises(MalformedJSON):
        split(b"[1,]")
