"""``atrium generate-config`` federation flags: the ``federation:`` section,
the self-signed certificate for the server name's host, and how the
section is read back."""

from __future__ import annotations

import ipaddress

import yaml
from cryptography import x509

from atrium.cli import main
from atrium.config.homeserver import load_config
from atrium.federation.config import federation_config_of


def _san(cert_path):
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_generate_config_writes_federation_section_and_certificate(tmp_path, capsys):
    data_dir = tmp_path / "hs"
    rc = main(
        [
            "generate-config",
            "--server-name",
            "localhost:8448",
            "--data-dir",
            str(data_dir),
            "--http-port",
            "8008",
            "--federation-port",
            "8448",
            "--federation-skip-verify",
            "--federation-allow-private-ips",
        ]
    )
    assert rc == 0
    section = yaml.safe_load((data_dir / "homeserver.yaml").read_text())["federation"]
    assert section["port"] == 8448
    assert section["verify_certificates"] is False
    assert section["allow_private_ips"] is True
    cert = data_dir / section["tls_certificate_path"]
    assert _san(cert).get_values_for_type(x509.DNSName) == ["localhost"]
    assert (data_dir / section["tls_private_key_path"]).stat().st_mode & 0o077 == 0

    config = federation_config_of(load_config([str(data_dir / "homeserver.yaml")]))
    assert config.enabled and config.port == 8448
    assert config.tls_certificate_path == cert
    assert not config.verify_certificates and config.allow_private_ips
    assert config.sender_instances == ("master",)


def test_ip_server_name_gets_an_ip_certificate_and_given_certificates_are_kept(tmp_path):
    data_dir = tmp_path / "ip"
    assert (
        main(
            [
                "generate-config",
                "--server-name",
                "127.0.0.1:8448",
                "--data-dir",
                str(data_dir),
                "--federation-port",
                "8448",
            ]
        )
        == 0
    )
    section = yaml.safe_load((data_dir / "homeserver.yaml").read_text())["federation"]
    san = _san(data_dir / section["tls_certificate_path"])
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert section["verify_certificates"] is True and section["allow_private_ips"] is False

    given = tmp_path / "given"
    assert (
        main(
            [
                "generate-config",
                "--server-name",
                "example.org",
                "--data-dir",
                str(given),
                "--tls-cert",
                "/etc/ssl/fed.crt",
                "--tls-key",
                "/etc/ssl/fed.key",
            ]
        )
        == 0
    )
    section = yaml.safe_load((given / "homeserver.yaml").read_text())["federation"]
    assert section["tls_certificate_path"] == "/etc/ssl/fed.crt"
    assert not (given / "federation.crt").exists()


def test_without_federation_flags_federation_is_off(tmp_path):
    data_dir = tmp_path / "plain"
    assert (
        main(["generate-config", "--server-name", "example.org", "--data-dir", str(data_dir)]) == 0
    )
    config = federation_config_of(load_config([str(data_dir / "homeserver.yaml")]))
    assert not config.enabled
