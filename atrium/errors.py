"""Matrix errors: what handlers raise and servlets turn into ``{"errcode", "error"}``.

The error codes and their HTTP statuses follow the client-server API section
"Standard error response" (client-server-api/_index.md).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class MatrixError(Exception):
    """An error a client or remote server should see, with its status code."""

    def __init__(self, code: int, msg: str, errcode: str = "M_UNKNOWN", **extra: Any) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = int(code)
        self.msg = msg
        self.errcode = errcode
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.msg, **self.extra}


def _error(default_code: int, errcode: str, default_msg: str) -> type[MatrixError]:
    class _Specific(MatrixError):
        def __init__(self, msg: str = default_msg, code: int = default_code, **extra: Any) -> None:
            super().__init__(code, msg, errcode, **extra)

    _Specific.__name__ = errcode.removeprefix("M_").title().replace("_", "")
    return _Specific


Forbidden = _error(HTTPStatus.FORBIDDEN, "M_FORBIDDEN", "Forbidden")
NotFound = _error(HTTPStatus.NOT_FOUND, "M_NOT_FOUND", "Not found")
Unrecognized = _error(HTTPStatus.NOT_FOUND, "M_UNRECOGNIZED", "Unrecognized request")
NotJson = _error(HTTPStatus.BAD_REQUEST, "M_NOT_JSON", "Content not JSON")
BadJson = _error(HTTPStatus.BAD_REQUEST, "M_BAD_JSON", "Malformed JSON")
MissingParam = _error(HTTPStatus.BAD_REQUEST, "M_MISSING_PARAM", "Missing parameter")
InvalidParam = _error(HTTPStatus.BAD_REQUEST, "M_INVALID_PARAM", "Invalid parameter")
MissingToken = _error(HTTPStatus.UNAUTHORIZED, "M_MISSING_TOKEN", "Missing access token")
UnknownToken = _error(HTTPStatus.UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Unknown or expired access token")
Unauthorized = _error(HTTPStatus.UNAUTHORIZED, "M_UNAUTHORIZED", "Unauthorized")
TooLarge = _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "M_TOO_LARGE", "Request too large")
UserInUse = _error(HTTPStatus.BAD_REQUEST, "M_USER_IN_USE", "User ID already taken")
InvalidUsername = _error(HTTPStatus.BAD_REQUEST, "M_INVALID_USERNAME", "Invalid user name")
RoomInUse = _error(HTTPStatus.BAD_REQUEST, "M_ROOM_IN_USE", "Room alias already taken")
UnsupportedRoomVersion = _error(
    HTTPStatus.BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version"
)
Unknown = _error(HTTPStatus.BAD_REQUEST, "M_UNKNOWN", "Unknown error")
Exclusive = _error(HTTPStatus.BAD_REQUEST, "M_EXCLUSIVE", "Reserved by an application service")
Unsupported = _error(HTTPStatus.BAD_REQUEST, "M_UNRECOGNIZED", "Unsupported")


class LimitExceeded(MatrixError):
    """Rate limited; tells the client when to retry (spec: M_LIMIT_EXCEEDED)."""

    def __init__(self, retry_after_ms: int | None = None, msg: str = "Too many requests") -> None:
        extra: dict[str, Any] = {}
        if retry_after_ms is not None:
            extra["retry_after_ms"] = int(retry_after_ms)
        super().__init__(HTTPStatus.TOO_MANY_REQUESTS, msg, "M_LIMIT_EXCEEDED", **extra)
        self.retry_after_ms = retry_after_ms


class InteractiveAuthIncomplete(Exception):
    """User-interactive auth needs another stage: a 401 with the flows, not an error body."""

    def __init__(self, session_id: str, result: dict[str, Any]) -> None:
        super().__init__("interactive auth incomplete")
        self.session_id = session_id
        self.result = result
