"""Pushers: GET /pushers and POST /pushers/set (client-server API "Push
notifications", pusher.yaml).

Pushers are stored, listed, replaced and deleted as the spec describes,
so clients (Element registers one per device for its push gateway) see
what they set. Atrium does not compute notifications nor call push
gateways yet: a pusher is kept, not used (docs/client-api.md). Only
``http`` pushers are accepted; ``email`` ones would need an email sender.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from atrium.errors import BadJson, InvalidParam, MissingParam
from atrium.storage.stores.pushers import Pusher, PusherStore

# pusher.yaml: app_id "Max length, 64 chars"; pushkey "Max length, 512 bytes".
MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512
MAX_TEXT_BYTES = 1024
NOTIFY_PATH = "/_matrix/push/v1/notify"


def _text(body: Mapping[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise MissingParam(f"Missing {name!r}")
        return None
    if not isinstance(value, str):
        raise BadJson(f"{name!r} must be a string")
    if "\x00" in value:
        raise InvalidParam(f"{name!r} must not contain NUL characters")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidParam(f"{name!r} is not valid Unicode") from None
    if size > MAX_TEXT_BYTES:
        raise InvalidParam(f"{name!r} is longer than {MAX_TEXT_BYTES} bytes")
    return value


def _identifiers(body: Mapping[str, Any]) -> tuple[str, str]:
    app_id = _text(body, "app_id", True)
    pushkey = _text(body, "pushkey", True)
    assert app_id is not None and pushkey is not None
    if not app_id or len(app_id) > MAX_APP_ID_CHARS:
        raise InvalidParam(f"'app_id' must be 1 to {MAX_APP_ID_CHARS} characters")
    if not pushkey or len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
        raise InvalidParam(f"'pushkey' must be 1 to {MAX_PUSHKEY_BYTES} bytes")
    return app_id, pushkey


class PushersHandler:
    def __init__(
        self, store: PusherStore, clock: Any, events_position: Callable[[], int] | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        # A new pusher is sent what notifies after it was set, not history.
        self.events_position = events_position or (lambda: 0)

    async def get_pushers(self, user_id: str) -> dict[str, Any]:
        return {"pushers": [p.to_json() for p in await self.store.get_pushers(user_id)]}

    async def set_pusher(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if "kind" not in body:
            raise MissingParam("Missing 'kind'")
        kind = body["kind"]
        app_id, pushkey = _identifiers(body)
        if kind is None:
            # "If kind is null, the pusher with this app_id and pushkey for
            # this user is deleted."
            await self.store.delete_pusher(user_id, app_id, pushkey)
            return {}
        if not isinstance(kind, str):
            raise BadJson("'kind' must be a string or null")
        if kind != "http":
            raise InvalidParam(f"Pushers of kind {kind[:50]!r} are not supported (only 'http')")
        data = body.get("data")
        if data is None:
            raise MissingParam("Missing 'data'")
        if not isinstance(data, dict):
            raise BadJson("'data' must be an object")
        url = data.get("url")
        if not isinstance(url, str):
            raise MissingParam("'data.url' is required for http pushers")
        try:
            parts = urlsplit(url) if "\x00" not in url else None
        except ValueError:  # e.g. an unclosed IPv6 bracket
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidParam("'data.url' must be an http(s) URL")
        if parts.path != NOTIFY_PATH:
            raise InvalidParam(f"'data.url' must have the path {NOTIFY_PATH}")
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise BadJson("'append' must be a boolean")
        pusher = Pusher(
            app_id,
            pushkey,
            kind,
            _text(body, "app_display_name", True) or "",
            _text(body, "device_display_name", True) or "",
            _text(body, "profile_tag", False),
            _text(body, "lang", True) or "",
            data,
        )
        await self.store.set_pusher(
            user_id, pusher, append, self.clock.time_msec(), self.events_position()
        )
        return {}
