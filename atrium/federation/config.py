"""The ``federation:`` section of homeserver.yaml as one typed object.

Federation is off unless the section exists (``atrium generate-config`` writes
it when any ``--federation-*``/``--tls-*`` flag is given) and ``enabled`` is
not false. docs/federation.md lists every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from atrium.federation.discovery import DEFAULT_FEDERATION_PORT

# The process that sends federation traffic when nothing else is configured.
DEFAULT_SENDER = "master"


@attrs.frozen
class OldVerifyKey:
    """A key we used to sign with, still published in ``old_verify_keys``."""

    key_id: str
    key: str
    expired_ts: int


@attrs.frozen
class FederationConfig:
    enabled: bool = False
    # The TLS listener for other homeservers.
    port: int = DEFAULT_FEDERATION_PORT
    bind_addresses: tuple[str, ...] = ("127.0.0.1",)
    tls_certificate_path: Path | None = None
    tls_private_key_path: Path | None = None
    # Outbound: check remote certificates (against ca_file, or the system CAs).
    verify_certificates: bool = True
    ca_file: Path | None = None
    # Outbound: allow connecting to private / loopback / link-local addresses.
    allow_private_ips: bool = False
    # Notary servers asked for keys a server cannot give us itself.
    trusted_key_servers: tuple[str, ...] = ()
    # Instances that run the outbound transaction queues; destinations are
    # shared among them by a stable hash of the server name.
    sender_instances: tuple[str, ...] = (DEFAULT_SENDER,)
    old_verify_keys: tuple[OldVerifyKey, ...] = ()

    @classmethod
    def from_section(
        cls, section: dict[str, Any] | None, config_dir: Path, default_binds: tuple[str, ...]
    ) -> FederationConfig:
        if not section:
            return cls(enabled=False, bind_addresses=default_binds)

        def rel(value: Any) -> Path | None:
            if not value:
                return None
            path = Path(str(value)).expanduser()
            return path if path.is_absolute() else config_dir / path

        old = tuple(
            OldVerifyKey(key_id, str(info["key"]), int(info["expired_ts"]))
            for key_id, info in (section.get("old_verify_keys") or {}).items()
        )
        return cls(
            enabled=bool(section.get("enabled", True)),
            port=int(section.get("port", DEFAULT_FEDERATION_PORT)),
            bind_addresses=tuple(section.get("bind_addresses") or default_binds),
            tls_certificate_path=rel(section.get("tls_certificate_path")),
            tls_private_key_path=rel(section.get("tls_private_key_path")),
            verify_certificates=bool(section.get("verify_certificates", True)),
            ca_file=rel(section.get("ca_file")),
            allow_private_ips=bool(section.get("allow_private_ips", False)),
            trusted_key_servers=tuple(section.get("trusted_key_servers") or ()),
            sender_instances=tuple(section.get("sender_instances") or (DEFAULT_SENDER,)),
            old_verify_keys=old,
        )


def federation_config_of(config: Any) -> FederationConfig:
    """The FederationConfig of a HomeServerConfig."""
    binds = config.listeners[0].bind_addresses if config.listeners else ("127.0.0.1",)
    return FederationConfig.from_section(config.federation, config.config_dir, tuple(binds))
