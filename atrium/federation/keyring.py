"""The keyring: other servers' verify keys, fetched, checked and cached.

Keys come from the server itself (``GET /_matrix/key/v2/server``) and, when
that fails and ``trusted_key_servers`` are configured, from notaries
(``POST /_matrix/key/v2/query``; the answer must carry the notary's
signature and the server's own). Every key is stored with how long it is
valid (the lesser of the response's ``valid_until_ts`` and fetch time plus 7
days), or, for ``old_verify_keys``, when it expired.

Validity rules:
- request signatures need a current key (in ``verify_keys``, not expired);
- event signatures in rooms with ``enforce_key_validity`` (v5+) need a key
  valid at the event's ``origin_server_ts``; older room versions ignore key
  validity (keys response ``valid_until_ts``: "MUST be ignored in room
  versions 1, 2, 3, and 4").
A key that is unknown, or not valid at the time asked for, triggers a fetch;
fetches of one server are serialised and at most one per
``MIN_REFETCH_MS`` is made for a server whose answer did not help.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from signedjson.types import SigningKey

from atrium.crypto.event_signing import (
    SignatureVerifyError,
    required_signature_servers,
    sign_json_object,
    verify_event_signature,
)
from atrium.crypto.keys import (
    decode_verify_key_id,
    encode_verify_key_base64,
    get_verify_key,
    key_id,
)
from atrium.events.room_versions import RoomVersion
from atrium.federation.keys import (
    KeyResponseError,
    build_server_keys,
    check_notary_signature,
    parse_server_keys,
)
from atrium.federation.store import FederationStore, StoredKey
from atrium.util.async_helpers import Linearizer
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

KEY_SERVER_PATH = "/_matrix/key/v2/server"
KEY_QUERY_PATH = "/_matrix/key/v2/query"
MIN_REFETCH_MS = 60_000
KEY_FETCH_TIMEOUT = 30.0


class KeyLookupError(Exception):
    """No key usable for what was asked."""


class Keyring:
    def __init__(
        self,
        *,
        store: FederationStore,
        client: Any,  # FederationHttpClient (or None when federation is off)
        clock: Clock,
        server_name: str,
        signing_key: SigningKey,
        old_verify_keys: tuple[tuple[str, str, int], ...] = (),
        trusted_key_servers: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self.server_name = server_name
        self.signing_key = signing_key
        self.old_verify_keys = old_verify_keys
        self.trusted_key_servers = trusted_key_servers
        self._fetch_lock = Linearizer("keyring_fetch")
        self._last_fetch: dict[str, int] = {}

    # -- our own keys ---------------------------------------------------------------
    def own_key_response(self) -> dict[str, Any]:
        return build_server_keys(
            self.server_name, self.signing_key, self.clock.time_msec(), self.old_verify_keys
        )

    def _own_keys(self) -> dict[str, StoredKey]:
        now = self.clock.time_msec()
        kid = key_id(self.signing_key)
        keys = {
            kid: StoredKey(
                kid,
                encode_verify_key_base64(get_verify_key(self.signing_key)),
                2**62,
                None,
                now,
            )
        }
        for old_id, key_b64, expired in self.old_verify_keys:
            keys.setdefault(old_id, StoredKey(old_id, key_b64, expired, expired, now))
        return keys

    # -- look-ups -----------------------------------------------------------------------
    async def get_request_key(self, server_name: str, kid: str) -> Any:
        """A key of ``server_name`` good for authenticating a request now."""
        now = self.clock.time_msec()

        def usable(key: StoredKey | None) -> bool:
            return key is not None and key.expired_ts is None and key.valid_until_ts >= now

        keys = await self._keys_of(server_name)
        if not usable(keys.get(kid)):
            keys = await self._refetch(server_name, lambda ks: usable(ks.get(kid)), [kid])
        key = keys.get(kid)
        if key is None:
            raise KeyLookupError(f"{server_name} has no key {kid}")
        if key.expired_ts is not None:
            raise KeyLookupError(f"key {kid} of {server_name} is an old key (expired)")
        if key.valid_until_ts < now:
            raise KeyLookupError(f"key {kid} of {server_name} expired at {key.valid_until_ts}")
        return decode_verify_key_id(kid, key.verify_key)

    async def get_event_keys(
        self, server_name: str, key_ids: list[str], valid_at: int | None
    ) -> dict[str, Any]:
        """Those of ``key_ids`` valid at ``valid_at`` (any known key when None)."""

        def good(key: StoredKey | None) -> bool:
            if key is None:
                return False
            if valid_at is None:
                return True
            limit = key.expired_ts if key.expired_ts is not None else key.valid_until_ts
            return valid_at <= limit

        keys = await self._keys_of(server_name)
        if not any(good(keys.get(k)) for k in key_ids):
            keys = await self._refetch(
                server_name, lambda ks: any(good(ks.get(k)) for k in key_ids), key_ids
            )
        return {
            k: decode_verify_key_id(k, keys[k].verify_key) for k in key_ids if good(keys.get(k))
        }

    async def verify_event(self, room_version: RoomVersion, event_dict: Mapping[str, Any]) -> None:
        """Server-server API "Validating hashes and signatures on received events":
        every required server signed the (redacted) event with a key valid
        for it. Raises SignatureVerifyError."""
        valid_at: int | None = None
        if room_version.enforce_key_validity:
            ts = event_dict.get("origin_server_ts")
            valid_at = ts if isinstance(ts, int) else 0
        signatures = event_dict.get("signatures")
        if not isinstance(signatures, dict):
            raise SignatureVerifyError("event has no signatures")
        for server in sorted(required_signature_servers(room_version, event_dict)):
            by_key = signatures.get(server)
            if not isinstance(by_key, dict) or not by_key:
                raise SignatureVerifyError(f"event is not signed by {server}")
            key_ids = [k for k in by_key if isinstance(k, str) and k.startswith("ed25519:")]
            try:
                keys = await self.get_event_keys(server, key_ids, valid_at)
            except KeyLookupError as e:
                raise SignatureVerifyError(str(e)) from None
            if not keys:
                raise SignatureVerifyError(
                    f"no key of {server} among {sorted(key_ids)[:5]} is known and valid"
                    + (f" at {valid_at}" if valid_at is not None else "")
                )
            verify_event_signature(room_version, event_dict, server, keys)

    # -- fetching --------------------------------------------------------------------------
    async def _keys_of(self, server_name: str) -> dict[str, StoredKey]:
        if server_name == self.server_name:
            return self._own_keys()
        return await self.store.get_server_keys(server_name)

    async def _refetch(
        self, server_name: str, satisfied: Any, key_ids: Sequence[str] = ()
    ) -> dict[str, StoredKey]:
        if server_name == self.server_name or self.client is None:
            return await self._keys_of(server_name)
        async with self._fetch_lock.queue(server_name):
            # Someone else may have fetched while we waited.
            keys = await self._keys_of(server_name)
            if satisfied(keys):
                return keys
            now = self.clock.time_msec()
            if now - self._last_fetch.get(server_name, -MIN_REFETCH_MS) < MIN_REFETCH_MS:
                return keys
            self._last_fetch[server_name] = now
            await self.fetch_keys(server_name, key_ids)
            return await self._keys_of(server_name)

    async def fetch_keys(self, server_name: str, key_ids: Sequence[str] = ()) -> bool:
        """Fetch and store a server's keys: directly, then from notaries. True if stored.

        ``key_ids`` are the keys we are after: notaries are asked for those by
        ID, since a notary may answer a request for "all keys" from its cache
        only (Synapse does), and so say nothing about a server it never saw.
        """
        try:
            data = await self.client.get_json(
                server_name, KEY_SERVER_PATH, sign=False, timeout=KEY_FETCH_TIMEOUT
            )
            await self._store(server_name, server_name, data)
            return True
        except Exception as e:
            logger.info("Fetching keys of %s directly failed: %s", server_name, e)
        for notary in self.trusted_key_servers:
            if notary in (server_name, self.server_name):
                continue
            try:
                if await self._fetch_from_notary(notary, server_name, key_ids):
                    return True
            except Exception as e:
                logger.info("Fetching keys of %s from notary %s failed: %s", server_name, notary, e)
        return False

    async def _fetch_from_notary(
        self, notary: str, server_name: str, key_ids: Sequence[str] = ()
    ) -> bool:
        # Key API "Querying Keys Through Another Server": criteria per key ID;
        # an empty object asks for every key the notary knows.
        criteria = {kid: {"minimum_valid_until_ts": self.clock.time_msec()} for kid in key_ids}
        answer = await self.client.post_json(
            notary,
            KEY_QUERY_PATH,
            {"server_keys": {server_name: criteria}},
            timeout=KEY_FETCH_TIMEOUT,
        )
        responses = answer.get("server_keys") if isinstance(answer, dict) else None
        if not isinstance(responses, list):
            raise KeyResponseError("notary answer has no server_keys list")
        stored = False
        for response in responses:
            if not isinstance(response, dict) or response.get("server_name") != server_name:
                continue
            signatures = response.get("signatures")
            notary_sigs = signatures.get(notary) if isinstance(signatures, dict) else None
            if not isinstance(notary_sigs, dict):
                raise KeyResponseError(f"notary {notary} did not sign its answer")
            notary_keys = await self.get_event_keys(notary, list(notary_sigs), None)
            check_notary_signature(response, notary, notary_keys)
            await self._store(server_name, notary, response)
            stored = True
        return stored

    async def _store(self, server_name: str, from_server: str, data: Any) -> None:
        now = self.clock.time_msec()
        parsed = parse_server_keys(data, server_name, now)
        await self.store.store_server_keys(
            server_name,
            from_server,
            now,
            parsed.valid_until_ts,
            parsed.response,
            [
                StoredKey(k.key_id, k.key_base64, k.valid_until_ts, k.expired_ts, now)
                for k in parsed.keys
            ],
        )

    # -- acting as a notary -----------------------------------------------------------------
    async def notary_responses(
        self, server_name: str, minimum_valid_until_ts: int
    ) -> list[dict[str, Any]]:
        """``server_name``'s key response, signed by us too (refetched if stale)."""
        if server_name == self.server_name:
            return [self.own_key_response()]
        stored = await self.store.get_key_response(server_name)
        if (stored is None or stored[1] < minimum_valid_until_ts) and self.client is not None:
            try:
                data = await self.client.get_json(
                    server_name, KEY_SERVER_PATH, sign=False, timeout=KEY_FETCH_TIMEOUT
                )
                await self._store(server_name, server_name, data)
            except Exception as e:
                logger.info("Notary fetch of %s failed: %s", server_name, e)
            stored = await self.store.get_key_response(server_name)
        if stored is None:
            # Spec: an empty list when the server cannot be reached and
            # nothing is cached.
            return []
        return [sign_json_object(dict(stored[0]), self.server_name, self.signing_key)]
