"""Push rules API (spec: client-server API "Push Rules: API"). Only the
``global`` scope exists."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import InvalidParam
from atrium.http.request import parse_json_object, query_string
from atrium.http.server import Router, client_paths


def _check_scope(scope: str) -> None:
    if scope != "global":
        raise InvalidParam("The only push rule scope is 'global'")


def register_servlets(hs: Any, router: Router) -> None:
    config = hs.config
    auth = hs.auth
    handler = hs.push_rules

    def body_of(request: Request) -> dict[str, Any]:
        return parse_json_object(request, config.max_request_size)

    async def get_all(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await handler.push_rules_content(requester.user_id)

    async def get_scope(request: Request, scope: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        _check_scope(scope)
        return 200, await handler.get_ruleset(requester.user_id)

    async def get_rule(request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        _check_scope(scope)
        return 200, await handler.get_rule(requester.user_id, kind, rule_id)

    async def put_rule(request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        _check_scope(scope)
        body = body_of(request)
        before = query_string(request, "before")
        after = query_string(request, "after")
        await handler.set_rule(requester.user_id, kind, rule_id, body, before, after)
        return 200, {}

    async def delete_rule(request: Request, scope: str, kind: str, rule_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        _check_scope(scope)
        await handler.delete_rule(requester.user_id, kind, rule_id)
        return 200, {}

    def attribute_servlets(attr: str) -> tuple[Any, Any]:
        async def get_attr(
            request: Request, scope: str, kind: str, rule_id: str
        ) -> tuple[int, Any]:
            requester = await auth.get_requester(request)
            _check_scope(scope)
            rule = await handler.get_rule(requester.user_id, kind, rule_id)
            return 200, {attr: rule[attr]}

        async def put_attr(
            request: Request, scope: str, kind: str, rule_id: str
        ) -> tuple[int, Any]:
            requester = await auth.get_requester(request)
            _check_scope(scope)
            body = body_of(request)
            setter = handler.set_enabled if attr == "enabled" else handler.set_actions
            await setter(requester.user_id, kind, rule_id, body.get(attr))
            return 200, {}

        get_attr.__name__ = f"get_push_rule_{attr}"
        put_attr.__name__ = f"put_push_rule_{attr}"
        return get_attr, put_attr

    # Push rules live in the account_data stream, written by the master.
    write, read = "client_master", "client_read"
    router.register("GET", client_paths("/pushrules/"), get_all, read)
    router.register("GET", client_paths("/pushrules"), get_all, read)
    router.register("GET", client_paths("/pushrules/{scope}/"), get_scope, read)
    router.register("GET", client_paths("/pushrules/{scope}"), get_scope, read)
    rule = "/pushrules/{scope}/{kind}/{rule_id}"
    router.register("GET", client_paths(rule), get_rule, read)
    router.register("PUT", client_paths(rule), put_rule, write)
    router.register("DELETE", client_paths(rule), delete_rule, write)
    for attr in ("enabled", "actions"):
        get_attr, put_attr = attribute_servlets(attr)
        router.register("GET", client_paths(f"{rule}/{attr}"), get_attr, read)
        router.register("PUT", client_paths(f"{rule}/{attr}"), put_attr, write)
