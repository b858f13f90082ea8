"""The default Kubernetes fetch against a real local HTTPS server with its own CA."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelseal.device.kubernetes import cluster_uid, fetch_https

UID = "5c1b5e58-1f6e-4c1b-9e2a-0d7b7a1c2f3e"
TOKEN = "sa-token-123"


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path == "/api/v1/namespaces/kube-system":
            body = json.dumps(
                {"kind": "Namespace", "metadata": {"name": "kube-system", "uid": UID}}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/api/v1/namespaces/kube-system")
            self.end_headers()
        else:
            self.send_response(403)
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Path, list[tuple[str, str | None]]]]:
    cert, key = _self_signed(tmp_path, "apiserver")
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", cert, seen
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_https_sends_token_and_verifies_ca(
    api: tuple[str, Path, list[tuple[str, str | None]]],
) -> None:
    host, ca, seen = api
    body = fetch_https(f"https://{host}/api/v1/namespaces/kube-system", TOKEN, ca, 5.0)
    assert json.loads(body)["metadata"]["uid"] == UID
    assert seen == [("/api/v1/namespaces/kube-system", f"Bearer {TOKEN}")]


def test_fetch_https_does_not_follow_redirects(
    api: tuple[str, Path, list[tuple[str, str | None]]],
) -> None:
    host, ca, seen = api
    with pytest.raises(OSError, match="302"):
        fetch_https(f"https://{host}/redirect", TOKEN, ca, 5.0)
    assert [path for path, _ in seen] == ["/redirect"]


def test_fetch_https_refuses_plain_http(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="https"):
        fetch_https("http://127.0.0.1:1/", TOKEN, tmp_path / "ca.crt", 1.0)


def _pod_root(tmp_path: Path, ca: Path) -> Path:
    account = tmp_path / "root/var/run/secrets/kubernetes.io/serviceaccount"
    account.mkdir(parents=True)
    (account / "token").write_text(TOKEN + "\n")
    (account / "ca.crt").write_bytes(ca.read_bytes())
    return tmp_path / "root"


def test_cluster_uid_end_to_end(
    tmp_path: Path, api: tuple[str, Path, list[tuple[str, str | None]]]
) -> None:
    host, ca, _seen = api
    address, port = host.split(":")
    env = {"KUBERNETES_SERVICE_HOST": address, "KUBERNETES_SERVICE_PORT": port}
    assert cluster_uid(_pod_root(tmp_path, ca), env) == UID


def test_cluster_uid_with_the_wrong_ca_is_absent(
    tmp_path: Path, api: tuple[str, Path, list[tuple[str, str | None]]]
) -> None:
    host, _ca, seen = api
    other_ca, _key = _self_signed(tmp_path, "other")
    address, port = host.split(":")
    env = {"KUBERNETES_SERVICE_HOST": address, "KUBERNETES_SERVICE_PORT": port}
    assert cluster_uid(_pod_root(tmp_path, other_ca), env) is None
    assert seen == []  # the TLS handshake failed before any request was sent


def test_cluster_uid_unreachable_is_absent(tmp_path: Path) -> None:
    ca, _key = _self_signed(tmp_path, "ca")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"}
    assert cluster_uid(_pod_root(tmp_path, ca), env, timeout=1.0) is None
