"""Slow clients are cut off (issue 22, item 5): a real ``aiflow serve`` on loopback, raw sockets that connect and say
nothing, half-send their headers (or trickle them a byte at a time), half-send a body, or stay idle after a response —
each is closed within its configured timeout, while a normal client still gets 200; past the connection limit, 503."""

from __future__ import annotations

import selectors
import socket
import time

import httpx

from tests.aiflow.serving.conftest import TOKEN, Home, record

HEADER_TIMEOUT, BODY_TIMEOUT, KEEP_ALIVE = 1.5, 1.5, 1.0
SLACK = 3.0  # a shared 2-core machine: a timer may fire late, never early enough to matter here
OPTIONS = ("--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT), "--keep-alive-timeout", str(KEEP_ALIVE))


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setblocking(False)
    return sock


def wait_closed(socks: dict[str, list[socket.socket]], until: float, trickle: list[socket.socket] = ()) -> dict[str, list[float]]:
    """Seconds until the server closed each socket (inf: still open at ``until``); ``trickle`` sockets get one more header
    byte every 0.2 s meanwhile, as a slowloris client does."""
    start, closed = time.monotonic(), {}
    selector = selectors.DefaultSelector()
    for kind, group in socks.items():
        for sock in group:
            selector.register(sock, selectors.EVENT_READ, kind)
    next_byte = start
    while selector.get_map() and time.monotonic() < until:
        if time.monotonic() >= next_byte:
            for sock in trickle:
                if sock.fileno() != -1 and sock.fileno() in selector.get_map():
                    try:
                        sock.send(b"X")
                    except OSError:
                        pass
            next_byte += 0.2
        for key, _ in selector.select(timeout=0.05):
            try:
                data = key.fileobj.recv(65536)
            except ConnectionResetError:
                data = b""
            except BlockingIOError:
                continue
            if not data:  # end of stream: the server closed it
                selector.unregister(key.fileobj)
                closed.setdefault(key.data, []).append(time.monotonic() - start)
    for key in list(selector.get_map().values()):  # still open at the deadline
        closed.setdefault(key.data, []).append(float("inf"))
    selector.close()
    return closed


def predict_status(url: str) -> int:
    answer = httpx.post(f"{url}/v1/predict", json={"dataset": "trips", "records": [record()]},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)  # fmt: skip
    return answer.status_code


def test_slow_clients_are_cut_off_and_a_normal_client_is_answered(home: Home, serve):
    server = serve(home, *OPTIONS, "--limit-concurrency", "40")
    body_head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()  # fmt: skip
    socks: dict[str, list[socket.socket]] = {kind: [] for kind in ("silent", "half_header", "trickle", "half_body", "kept_alive")}
    opened = time.monotonic()
    for _ in range(4):
        socks["silent"].append(connect(server.url))
        for kind, first in (("half_header", b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"), ("trickle", b"GET /v2/health/live HTTP/1.1\r\nX-A: "),
                            ("half_body", body_head + b'{"dataset": "trips", '), ("kept_alive", b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")):  # fmt: skip
            sock = connect(server.url)
            sock.sendall(first)
            socks[kind].append(sock)

    # 20 slow connections held: a normal client is answered meanwhile
    assert predict_status(server.url) == 200
    closed = wait_closed(socks, until=opened + max(HEADER_TIMEOUT, BODY_TIMEOUT) + SLACK, trickle=socks["trickle"])
    limits = {"silent": HEADER_TIMEOUT, "half_header": HEADER_TIMEOUT, "trickle": HEADER_TIMEOUT, "half_body": BODY_TIMEOUT,
              "kept_alive": KEEP_ALIVE}  # fmt: skip
    for kind, limit in limits.items():
        assert len(closed[kind]) == 4 and max(closed[kind]) <= limit + SLACK, (kind, closed[kind])
    for group in socks.values():
        for sock in group:
            sock.close()

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert client.post("/v1/predict", json={"dataset": "trips", "records": [record()]}).status_code == 200
        text = client.get("/metrics").text
    assert 'aiflow_slow_clients_closed_total{phase="header"} 12.0' in text
    assert 'aiflow_slow_clients_closed_total{phase="body"} 4.0' in text
    assert "Traceback" not in server.output()  # the app reading a body that never came saw a disconnect, not an error


def test_past_the_connection_limit_requests_get_503_until_slow_clients_are_cut_off(home: Home, serve):
    header_timeout = 3.0  # long enough that the silent connections are surely still open when the request comes
    server = serve(home, "--header-timeout", str(header_timeout), "--limit-concurrency", "10")
    silent = [connect(server.url) for _ in range(10)]
    assert predict_status(server.url) == 503
    closed = wait_closed({"silent": silent}, until=time.monotonic() + header_timeout + SLACK)
    assert max(closed["silent"]) <= header_timeout + SLACK
    assert predict_status(server.url) == 200
    for sock in silent:
        sock.close()
