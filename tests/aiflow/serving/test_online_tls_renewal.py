"""Certificate renewal without restart: a real ``aiflow serve`` over HTTPS on 127.0.0.1, its certificate files swapped as a
mounted Kubernetes Secret is (a ``..data`` symlink flipped); new connections get the new certificate, requests keep being
answered, the process is the same, and a pair that does not load (the key of the old certificate) leaves the old one served."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.aiflow.serving.conftest import TOKEN, Home, record, wait_ready
from tests.aiflow.serving.test_online_tls import self_signed

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def secret_version(mount: Path, name: str, cert: str, key: str) -> None:
    """Lay the files as the kubelet does: mount/name/{tls.crt,tls.key}; mount/..data -> name (flipped atomically);
    mount/tls.crt -> ..data/tls.crt (the paths the server was given never change)."""
    folder = mount / name
    folder.mkdir(parents=True)
    (folder / "tls.crt").write_bytes(Path(cert).read_bytes())
    (folder / "tls.key").write_bytes(Path(key).read_bytes())
    (mount / "..data_tmp").symlink_to(name)
    os.replace(mount / "..data_tmp", mount / "..data")
    for file in ("tls.crt", "tls.key"):
        if not (mount / file).is_symlink():
            (mount / file).symlink_to(f"..data/{file}")


def presented(port: int) -> bytes:
    """The certificate a NEW TLS connection to the server gets (DER), whatever it is."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


def der(cert_path: str) -> bytes:
    return x509.load_pem_x509_certificate(Path(cert_path).read_bytes()).public_bytes(Encoding.DER)


def trusting(*certs: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs[0])
    for cert in certs[1:]:
        context.load_verify_locations(cafile=cert)
    return context


def predict(client: httpx.Client, url: str) -> int:
    return client.post(f"{url}/v1/predict", json={"dataset": "trips", "records": [record()]}, headers=HEADERS).status_code


def test_a_renewed_certificate_reaches_new_connections_without_a_restart(home: Home, serve, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = self_signed(tmp_path / "a"), self_signed(tmp_path / "b")
    mount = tmp_path / "secret"
    secret_version(mount, "..v1", *first)
    server = serve(home, "--tls-cert", str(mount / "tls.crt"), "--tls-key", str(mount / "tls.key"), "--tls-reload-interval", "0.2",
                   wait=False)  # fmt: skip
    server.url = server.url.replace("http://", "https://")
    port, pid = int(server.url.rsplit(":", 1)[1]), server.proc.pid
    wait_ready(server, verify=trusting(first[0]))
    assert presented(port) == der(first[0])

    with httpx.Client(verify=trusting(first[0], second[0]), timeout=10) as client:
        assert predict(client, server.url) == 200

        # A half-renewed pair (the new certificate with the old key) does not load: the old certificate stays, requests answer.
        secret_version(mount, "..v2", second[0], first[1])
        time.sleep(1.0)
        assert predict(client, server.url) == 200 and presented(port) == der(first[0])

        # The whole new pair: new connections get it within a few polls, no restart, requests answered throughout.
        secret_version(mount, "..v3", *second)
        answered, deadline = 0, time.monotonic() + 15
        while presented(port) != der(second[0]):
            assert time.monotonic() < deadline, server.output()
            assert predict(client, server.url) == 200
            answered += 1
            time.sleep(0.05)
        assert predict(client, server.url) == 200
        metrics = client.get(f"{server.url}/metrics", headers=HEADERS).text

    assert server.proc.poll() is None and server.proc.pid == pid
    with httpx.Client(verify=trusting(second[0]), timeout=10) as only_new:  # a client that trusts only the new certificate
        assert predict(only_new, server.url) == 200
    assert 'aiflow_tls_certificate_reloads_total{outcome="failed"} 1.0' in metrics
    assert 'aiflow_tls_certificate_reloads_total{outcome="reloaded"} 1.0' in metrics
    assert "kept the current TLS certificate" in server.output() and "reloaded the TLS certificate" in server.output()
