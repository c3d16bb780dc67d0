"""TLS for federation: our listener's certificate and the outbound policy.

Server-server API "TLS": federation happens over HTTPS; the destination
presents a certificate for the name we expect (the server name's hostname,
or the delegated hostname after .well-known), and we send that name as SNI
unless it is an IP address. Operators may point ``ca_file`` at their own
trust roots, or switch verification off for test setups.

``generate_self_signed_certificate`` makes the certificate
``atrium generate-config`` writes when none is given: one for the server
name's host (a DNS or IP subjectAltName), valid for ten years.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _ip_or_none(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def host_of_server_name(server_name: str) -> str:
    """``example.org:8448`` -> ``example.org``; ``[::1]:8448`` -> ``::1``."""
    if server_name.startswith("["):
        return server_name[1 : server_name.index("]")]
    return server_name.rsplit(":", 1)[0] if ":" in server_name else server_name


def generate_self_signed_certificate(
    host: str, cert_path: Path, key_path: Path, days: int = 3650
) -> None:
    """Write a self-signed certificate (and its key, mode 0600) for ``host``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    ip = _ip_or_none(host)
    san: x509.GeneralName = x509.IPAddress(ip) if ip is not None else x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        # A self-signed certificate is its own trust root when an operator
        # lists it in another server's ca_file.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_tls_options(cert_path: Path, key_path: Path) -> ssl.CertificateOptions:
    """Context factory for the federation listener (TLS 1.2 or newer).

    The certificate file may hold a chain (leaf first).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    certs = _PEM_CERT.findall(Path(cert_path).read_bytes())
    if not certs:
        raise ValueError(f"{cert_path}: no PEM certificate found")
    key = load_pem_private_key(Path(key_path).read_bytes(), password=None)
    chain = [x509.load_pem_x509_certificate(c) for c in certs]
    return ssl.CertificateOptions(
        privateKey=key,
        certificate=chain[0],
        extraCertChain=chain[1:] or None,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    """TLS without certificate checks (test setups), still sending SNI."""

    def __init__(self, hostname: str) -> None:
        self._sni = None if _ip_or_none(hostname) is not None else hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N802
        # A fresh context per connection: Twisted sets ALPN on the context of
        # each connection, and a context cannot change once it was used.
        context = ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_2).getContext()
        connection = SSL.Connection(context, None)
        connection.set_app_data(tlsProtocol)
        if self._sni:
            connection.set_tlsext_host_name(self._sni)
        connection.set_connect_state()
        return connection


class ClientTLSPolicy:
    """Makes the TLS connection creator for one outbound hostname."""

    def __init__(self, verify: bool = True, ca_file: Path | None = None) -> None:
        self.verify = verify
        self._trust_root: Any
        if not verify:
            self._trust_root = None
        elif ca_file is not None:
            pems = _PEM_CERT.findall(Path(ca_file).read_bytes())
            if not pems:
                raise ValueError(f"{ca_file}: no PEM certificate found")
            self._trust_root = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(p) for p in pems]
            )
        else:
            self._trust_root = ssl.platformTrust()

    def creator_for(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        """Checks the certificate names ``hostname`` (a DNS name or an IP literal).

        Use one creator per connection (each has its own OpenSSL context).
        """
        if not self.verify:
            return _UnverifiedCreator(hostname)
        return ssl.optionsForClientTLS(hostname, trustRoot=self._trust_root)
