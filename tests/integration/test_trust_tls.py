"""TLS and mTLS on a real daemon: a self-signed CA made by the test, a server certificate for
localhost, and a client certificate whose common name is a principal's `cert_cn`."""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from router.client import RouterClient
from router.core.auth import PrincipalsFile
from router.core.auth.principals import write_private
from router.domain.access import Role
from router.domain.errors import BackendUnavailableError, UnauthenticatedError
from tests.conftest import ServerThread, make_settings

pytestmark = pytest.mark.integration


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".pem")
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _issue(ca_key, ca_name: x509.Name, subject: str, key, *, server: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1)))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


class Pki:
    def __init__(self, root: Path) -> None:
        ca_key = _key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hybrid-router test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
        _, self.ca = _write(root / "ca", ca_key, ca)
        server_key = _key()
        self.server_key, self.server_cert = _write(root / "server", server_key,
                                                   _issue(ca_key, ca_name, "localhost", server_key, server=True))
        client_key = _key()
        self.client_key, self.client_cert = _write(root / "carol", client_key,
                                                   _issue(ca_key, ca_name, "carol.clients", client_key, server=False))


@pytest.fixture(scope="module")
def tls_daemon(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Pki, Path]]:
    home = tmp_path_factory.mktemp("tls")
    pki = Pki(home)
    principals = PrincipalsFile(home / "principals.toml")
    principals.issue("carol", Role.USER, (), cert_cn="carol.clients")
    # The principals file exists before the daemon starts, so it makes no local admin: issue one here.
    write_private(home / "admin.token", principals.issue("admin", Role.ADMIN, ("*",)) + "\n")
    server = ServerThread(make_settings({
        "HYBRID_ROUTER_AUTH__MODE": "token",
        "HYBRID_ROUTER_AUTH__PRINCIPALS_FILE": str(home / "principals.toml"),
        "HYBRID_ROUTER_AUTH__LOCAL_TOKEN_FILE": str(home / "admin.token"),
        "HYBRID_ROUTER_SERVER__TLS_CERT_FILE": str(pki.server_cert),
        "HYBRID_ROUTER_SERVER__TLS_KEY_FILE": str(pki.server_key),
        "HYBRID_ROUTER_SERVER__TLS_CLIENT_CA_FILE": str(pki.ca)}))
    yield server, pki, home
    server.stop()


def test_a_client_certificate_signs_in_as_its_principal(tls_daemon) -> None:
    server, pki, home = tls_daemon
    with RouterClient(server.address, timeout_s=60, token_file=home / "absent", ca_file=pki.ca,
                      client_cert_file=pki.client_cert, client_key_file=pki.client_key) as client:
        result = client.generate(prompt="Say hi.", mode="edge", max_tokens=4)
    assert result.text is not None and result.request_id


def test_a_token_over_tls_works_next_to_the_client_certificate(tls_daemon) -> None:
    server, pki, home = tls_daemon
    admin = (home / "admin.token").read_text().strip()
    with RouterClient(server.address, timeout_s=60, token=admin, ca_file=pki.ca,
                      client_cert_file=pki.client_cert, client_key_file=pki.client_key) as client:
        assert client.stats().ledger is not None  # Stats is an admin's: the token, not the certificate, decided


def test_without_the_ca_or_a_client_certificate_nothing_gets_through(tls_daemon) -> None:
    server, pki, home = tls_daemon
    with RouterClient(server.address, timeout_s=10, token_file=home / "admin.token") as plaintext, \
            pytest.raises(BackendUnavailableError):
        plaintext.info()  # a plaintext client cannot even complete the handshake
    with RouterClient(server.address, timeout_s=10, token_file=home / "admin.token", ca_file=pki.ca) as no_cert, \
            pytest.raises(BackendUnavailableError):
        no_cert.info()  # mTLS: the server requires a client certificate


def test_a_certificate_no_principal_names_is_unauthenticated(tls_daemon) -> None:
    server, pki, home = tls_daemon
    PrincipalsFile(home / "principals.toml").revoke("carol")
    with RouterClient(server.address, timeout_s=60, token_file=home / "absent", ca_file=pki.ca,
                      client_cert_file=pki.client_cert, client_key_file=pki.client_key) as client, \
            pytest.raises(UnauthenticatedError, match="cert_cn"):
        client.info()
