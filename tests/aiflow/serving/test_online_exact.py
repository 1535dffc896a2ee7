"""Scope: the request-path helpers of ``aiflow.serving.online`` called in process (issue 22, mutation testing): the body
reader on real Starlette requests (413 on the declared length and while streaming, exactly at the limit and one byte
past it; 408 when the client goes away; 400 for malformed JSON and for nesting exactly one level past the limit; what
orjson refuses but ``json`` reads), the nesting check, the bounded set of recent request ids, request ids, and the
compact JSON response (with its background task). The app itself (``create_app``) is tested on real servers elsewhere."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from starlette.background import BackgroundTask
from starlette.requests import Request

from aiflow.serving.errors import HTTPError
from aiflow.serving.online import MAX_DEPTH, RecentIds, RequestIds, _deeper_than, json_response, read_json


def request(*chunks: bytes, length: str | None = None, disconnect: bool = False) -> Request:
    """A real Starlette request whose body arrives in ``chunks`` (then, with ``disconnect``, the client goes away)."""
    headers = [(b"content-type", b"application/json")] + ([(b"content-length", length.encode())] if length is not None else [])
    messages = [{"type": "http.request", "body": c, "more_body": disconnect or i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": "/v1/predict", "headers": headers}, receive)


def read(req: Request, limit: int = 100) -> object:
    return asyncio.run(read_json(req, limit))


def refused(req: Request, limit: int = 100) -> tuple[int, str]:
    with pytest.raises(HTTPError) as err:
        read(req, limit)
    return err.value.status, err.value.message


def nested(depth: int) -> bytes:
    """A JSON body nesting ``depth`` levels (the outer object is level 1)."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def test_a_body_exactly_at_the_limit_is_read_and_one_byte_more_is_a_413():
    body = b'{"records": [' + b"1," * 40 + b"1]}"
    limit = len(body)
    assert read(request(body, length=str(limit)), limit) == {"records": [1] * 41}
    assert read(request(body[:50], body[50:]), limit) == {"records": [1] * 41}  # streamed in two chunks, no length given
    declared = f"request body of {limit + 1} bytes is over the limit of {limit} bytes; send fewer records per request"
    assert refused(request(body + b" ", length=str(limit + 1)), limit) == (413, declared)
    streamed = f"request body is over the limit of {limit} bytes; send fewer records per request"
    assert refused(request(body[:50], body[50:] + b" "), limit) == (413, streamed)  # no length: counted while reading
    assert refused(request(body + b" ", length="12"), limit) == (413, streamed)  # a length that lies is not trusted
    assert refused(request(body + b" ", length="many"), limit) == (413, streamed)  # nor one that is not a number


def test_a_client_gone_before_the_body_ends_is_a_408():
    assert refused(request(b'{"records": [', disconnect=True)) == (408, "the connection closed before the request body was complete")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'{"records": [1,]}', "request body is not valid JSON: Expecting value: line 1 column 16 (char 15)"),
        (b"\xff", "request body is not valid JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ],
)
def test_malformed_json_is_a_400_with_the_parsers_words(body, message):
    assert refused(request(body)) == (400, message)


def test_what_orjson_refuses_but_json_reads_is_read():
    payload = read(request(b'{"x": NaN, "n": 123456789012345678901234567890}'))
    assert math.isnan(payload["x"]) and payload["n"] == 123456789012345678901234567890


def test_nesting_exactly_at_the_limit_is_read_and_one_level_more_is_a_400():
    deep = f"request body nests arrays or objects deeper than {MAX_DEPTH} levels"
    assert MAX_DEPTH == 32
    assert read(request(nested(32)), 1000) == json.loads(nested(32))
    assert refused(request(nested(33)), 1000) == (400, deep)
    assert refused(request(b"[" * 5000 + b"]" * 5000), 100_000) == (400, deep)  # past orjson's own limit: json's recursion
    assert refused(request(b"[" * 100_000 + b"]" * 100_000), 1_000_000) == (400, deep)


@pytest.mark.parametrize(
    ("value", "limit", "deeper"),
    [
        (1, 0, True), (1, 1, False), ("text", 1, False), ([], 1, False), ([[]], 1, True), ([[]], 2, False),
        ({"a": [1, {"b": {}}]}, 4, False), ({"a": [1, {"b": {}}]}, 3, True), ([1, 2, [3, [4]]], 3, False),
        ([1, 2, [3, [4]]], 2, True), ({"a": "x" * 10, "b": [[1]]}, 3, False), ([{"a": []}, 5], 2, True), ((1, (2,)), 1, False),
    ],
)  # fmt: skip
def test_the_nesting_check_counts_lists_and_objects_only(value, limit, deeper):
    assert _deeper_than(value, limit) is deeper


def test_recent_ids_keep_the_last_requests_up_to_the_limit_and_drop_whole_requests():
    recent = RecentIds(5)
    recent.add(["a", "b"])
    recent.add(["c", "d", "e"])
    assert len(recent) == 5 and all(i in recent for i in "abcde")  # exactly at the limit: nothing dropped
    recent.add(["f"])
    assert len(recent) == 4 and "a" not in recent and "b" not in recent and all(i in recent for i in "cdef")
    recent.add(["g", "h", "i", "j", "k", "l"])  # one request over the limit alone: everything before it goes, then it goes too
    assert len(recent) == 0 and "l" not in recent
    recent.add([])
    assert len(recent) == 0


def test_request_ids_count_up_from_a_random_prefix():
    ids = RequestIds()
    first, second = ids.take(2), ids.take(1)
    assert ids.take(0) == []
    prefix = first[0][:16]
    assert first + second == [f"{prefix}{i:016x}" for i in range(3)]
    assert ids.take(1) == [f"{prefix}{3:016x}"]
    assert RequestIds().take(1)[0][:16] != prefix


def test_json_responses_are_compact_utf8():
    response = json_response({"b": [1, 2.5], "a": "é"})
    assert response.body == '{"b":[1,2.5],"a":"é"}'.encode() and response.media_type == "application/json"
    assert response.background is None
    task = BackgroundTask(print, "after the answer")
    assert json_response([], background=task).background is task
