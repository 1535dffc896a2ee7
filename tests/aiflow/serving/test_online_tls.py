"""Optional TLS: ``aiflow serve --tls-cert/--tls-key`` serves HTTPS (a self-signed certificate for 127.0.0.1 made with the
``cryptography`` package), plain HTTP is refused on that port, and a half-given pair is refused at start."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.aiflow.serving.conftest import TOKEN, Home, record, wait_ready


def self_signed(folder) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_https_with_a_certificate_and_key(home: Home, serve, tmp_path):
    cert, key = self_signed(tmp_path)
    server = serve(home, "--tls-cert", cert, "--tls-key", key, wait=False)
    server.url = server.url.replace("http://", "https://")
    context = ssl.create_default_context(cafile=cert)
    wait_ready(server, verify=context)
    answer = httpx.post(f"{server.url}/v1/predict", json={"dataset": "trips", "records": [record()]},
                        headers={"Authorization": f"Bearer {TOKEN}"}, verify=context)  # fmt: skip
    assert answer.status_code == 200 and answer.json()["version"] == 1
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url.replace("https://", "http://") + "/v2/health/live", timeout=5)


def test_a_certificate_without_its_key_is_refused(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "AIFLOW_HOME": str(tmp_path), "AIFLOW_SERVE_TOKEN": TOKEN}
    out = subprocess.run([sys.executable, "-m", "aiflow.cli.main", "serve", "--tls-cert", "cert.pem"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "--tls-cert and --tls-key go together" in out.stderr
