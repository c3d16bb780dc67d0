"""Server-side key backups (client-server API "Server-side key backups").

A user's backup versions and the encrypted megolm session keys in them.
The server never reads ``auth_data`` or ``session_data`` (they are the
client's, encrypted to the backup key); it checks their shapes, applies
the spec's replacement rule when a session is uploaded again, and allows
writes only to the current (latest live) version: any other answers
403 ``M_WRONG_ROOM_KEYS_VERSION`` with ``current_version``, or 404 when
the user has no backup at all. Reads and deletions of keys work on any
live version.

Versions are opaque strings to clients; Atrium numbers them 1, 2, ... per
user. A version string that is not such a number names no backup (404).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atrium.errors import BadJson, InvalidParam, MatrixError, MissingParam, NotFound
from atrium.handlers.e2e_keys import clean_str
from atrium.storage.stores.room_keys import BackupVersion, RoomKey, RoomKeysStore

# Integers clients send (first_message_index, forwarded_count) must fit the
# database's BIGINT; canonical JSON's range (appendices "Canonical JSON") is
# also what every client produces.
MAX_SAFE_INTEGER = 2**53 - 1


class WrongRoomKeysVersion(MatrixError):
    """403 M_WRONG_ROOM_KEYS_VERSION (key_backup.yaml: "The version specified
    does not match the current backup version")."""

    def __init__(self, current_version: int) -> None:
        super().__init__(
            403,
            "Wrong backup version",
            "M_WRONG_ROOM_KEYS_VERSION",
            current_version=str(current_version),
        )


def parse_version(version: str) -> int | None:
    """The number behind a version string; None when it cannot name a backup."""
    if not version.isascii() or not version.isdigit() or len(version) > 15:
        return None
    number = int(version)
    return number if number > 0 else None


def _non_negative_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadJson(f"'{name}' must be an integer")
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise BadJson(f"'{name}' must be between 0 and {MAX_SAFE_INTEGER}")
    return value


def check_room_id(room_id: Any) -> str:
    if not clean_str(room_id) or not room_id.startswith("!"):
        raise InvalidParam(f"{str(room_id)[:100]!r} is not a room ID")
    return room_id


def check_session_id(session_id: Any) -> str:
    if not clean_str(session_id):
        raise InvalidParam("Session IDs must be non-empty strings of at most 255 bytes")
    return session_id


def parse_key_data(room_id: str, session_id: str, body: Any) -> RoomKey:
    """KeyBackupData (key_backup_data.yaml): every field required."""
    if not isinstance(body, dict):
        raise BadJson("Key data must be an object")
    for name in ("first_message_index", "forwarded_count", "is_verified", "session_data"):
        if name not in body:
            raise MissingParam(f"Key data is missing {name!r}")
    if not isinstance(body["is_verified"], bool):
        raise BadJson("'is_verified' must be a boolean")
    if not isinstance(body["session_data"], dict):
        raise BadJson("'session_data' must be an object")
    return RoomKey(
        check_room_id(room_id),
        check_session_id(session_id),
        _non_negative_int(body["first_message_index"], "first_message_index"),
        _non_negative_int(body["forwarded_count"], "forwarded_count"),
        body["is_verified"],
        body["session_data"],
    )


def parse_room_backup(room_id: str, body: Any) -> list[RoomKey]:
    """RoomKeyBackup (room_key_backup.yaml): ``{"sessions": {id: KeyBackupData}}``."""
    check_room_id(room_id)
    if not isinstance(body, dict):
        raise BadJson("Room key backup must be an object")
    sessions = body.get("sessions")
    if sessions is None:
        raise MissingParam("Missing 'sessions'")
    if not isinstance(sessions, dict):
        raise BadJson("'sessions' must be an object")
    return [parse_key_data(room_id, sid, data) for sid, data in sessions.items()]


def _parse_backup_body(body: Mapping[str, Any]) -> tuple[str, Any]:
    algorithm = body.get("algorithm")
    auth_data = body.get("auth_data")
    if algorithm is None:
        raise MissingParam("Missing 'algorithm'")
    if auth_data is None:
        raise MissingParam("Missing 'auth_data'")
    if not clean_str(algorithm):
        raise BadJson("'algorithm' must be a non-empty string of at most 255 bytes")
    if not isinstance(auth_data, dict):
        raise BadJson("'auth_data' must be an object")
    return algorithm, auth_data


def version_json(info: BackupVersion) -> dict[str, Any]:
    return {
        "algorithm": info.algorithm,
        "auth_data": info.auth_data,
        "count": info.count,
        "etag": str(info.etag),
        "version": str(info.version),
    }


def _found(value: Any) -> Any:
    """``value``, unless None (an unknown, deleted or unparseable version): 404."""
    if value is None:
        raise NotFound("Unknown backup version")
    return value


def _update_json(result: tuple[int, int]) -> dict[str, Any]:
    etag, count = result
    return {"etag": str(etag), "count": count}


class RoomKeysHandler:
    def __init__(self, store: RoomKeysStore) -> None:
        self.store = store

    # -- versions ------------------------------------------------------------------------
    async def create_version(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /room_keys/version."""
        algorithm, auth_data = _parse_backup_body(body)
        version = await self.store.create_version(user_id, algorithm, auth_data)
        return {"version": str(version)}

    async def get_version(self, user_id: str, version: str | None) -> dict[str, Any]:
        """GET /room_keys/version[/{version}]; no version: the current one."""
        if version is None:
            info = await self.store.get_version(user_id, None)
            if info is None:
                raise NotFound("No current backup version")
            return version_json(info)
        number = _found(parse_version(version))
        return version_json(_found(await self.store.get_version(user_id, number)))

    async def update_version(
        self, user_id: str, version: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """PUT /room_keys/version/{version}: only auth_data may change."""
        algorithm, auth_data = _parse_backup_body(body)
        if "version" in body and body["version"] != version:
            raise InvalidParam("'version' in the body does not match the path")
        number = _found(parse_version(version))
        info = _found(await self.store.get_version(user_id, number))
        if algorithm != info.algorithm:
            raise InvalidParam("Algorithm does not match")
        # False: deleted meanwhile.
        _found(await self.store.update_auth_data(user_id, info.version, auth_data) or None)
        return {}

    async def delete_version(self, user_id: str, version: str) -> dict[str, Any]:
        """DELETE /room_keys/version/{version}; deleting twice succeeds."""
        number = _found(parse_version(version))
        _found(await self.store.delete_version(user_id, number) or None)
        return {}

    # -- keys ----------------------------------------------------------------------------
    async def put_keys(self, user_id: str, version: str, keys: list[RoomKey]) -> dict[str, Any]:
        """PUT /room_keys/keys[/{roomId}[/{sessionId}]]: only into the current version."""
        current = await self.store.get_version(user_id, None)
        if current is None:
            raise NotFound("No current backup version")
        if parse_version(version) != current.version:
            raise WrongRoomKeysVersion(current.version)
        # None: deleted between the two reads.
        return _update_json(_found(await self.store.put_keys(user_id, current.version, keys)))

    async def get_keys(
        self,
        user_id: str,
        version: str,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """GET /room_keys/keys[/{roomId}[/{sessionId}]]."""
        number = _found(parse_version(version))
        keys = _found(await self.store.get_keys(user_id, number, room_id, session_id))
        if session_id is not None:
            if not keys:
                raise NotFound("No backed-up key for this session")
            return keys[0].to_json()
        if room_id is not None:
            return {"sessions": {k.session_id: k.to_json() for k in keys}}
        rooms: dict[str, Any] = {}
        for k in keys:
            rooms.setdefault(k.room_id, {"sessions": {}})["sessions"][k.session_id] = k.to_json()
        return {"rooms": rooms}

    async def delete_keys(
        self,
        user_id: str,
        version: str,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """DELETE /room_keys/keys[/{roomId}[/{sessionId}]]."""
        number = _found(parse_version(version))
        return _update_json(
            _found(await self.store.delete_keys(user_id, number, room_id, session_id))
        )
