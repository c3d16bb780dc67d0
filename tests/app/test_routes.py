"""The route table of a real HomeServer against the worker route groups.

Pins down who serves what: writes of master-written streams are in a group
only the master serves, generic workers serve reads only, and every route's
group is one the table knows.
"""

from __future__ import annotations

import pytest_twisted

from atrium.app.routes import MASTER_ONLY_GROUPS, ROUTE_GROUPS, WORKER_GROUPS, groups_for_app
from tests.support.server import running_homeserver

V3 = "/_matrix/client/v3"

# (method, path) of writes to streams only the master writes.
MASTER_WRITES = {
    ("PUT", f"{V3}/rooms/{{room_id}}/typing/{{user_id}}"),
    ("POST", f"{V3}/rooms/{{room_id}}/receipt/{{receipt_type}}/{{event_id}}"),
    ("POST", f"{V3}/rooms/{{room_id}}/read_markers"),
    ("PUT", f"{V3}/user/{{user_id}}/account_data/{{data_type}}"),
    ("PUT", f"{V3}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{data_type}}"),
    ("PUT", f"{V3}/user/{{user_id}}/rooms/{{room_id}}/tags/{{tag}}"),
    ("PUT", f"{V3}/pushrules/{{scope}}/{{kind}}/{{rule_id}}"),
    ("PUT", f"{V3}/presence/{{user_id}}/status"),
    ("PUT", f"{V3}/profile/{{user_id}}/{{field}}"),
    ("POST", f"{V3}/keys/upload"),
    ("POST", f"{V3}/keys/claim"),
    ("PUT", f"{V3}/sendToDevice/{{event_type}}/{{txn_id}}"),
    ("POST", f"{V3}/user/{{user_id}}/filter"),
    ("PUT", f"{V3}/devices/{{device_id}}"),
    ("POST", f"{V3}/register"),
}
# POSTs that only read (a body carries the query).
READING_POSTS = {f"{V3}/keys/query", f"{V3}/publicRooms"}


@pytest_twisted.ensureDeferred
async def test_worker_groups_split_the_routes_as_documented(tmp_path):
    async with running_homeserver(tmp_path) as (hs, _anon):
        routes = hs.router.routes
    groups = {r.group for r in routes}
    assert groups <= set(ROUTE_GROUPS), groups - set(ROUTE_GROUPS)
    by_key = {(r.method, r.template): r.group for r in routes}
    for key in MASTER_WRITES:
        assert key in by_key, key
        assert by_key[key] in MASTER_ONLY_GROUPS, (key, by_key[key])
    generic = groups_for_app("generic")
    assert generic is not None
    writes_on_generic = {r.template for r in routes if r.group in generic and r.method != "GET"}
    assert {t for t in writes_on_generic if t.startswith(V3)} == READING_POSTS
    # Events writes are served by event writers; /sync by sync workers only.
    assert (
        by_key[("PUT", f"{V3}/rooms/{{room_id}}/send/{{event_type}}/{{txn_id}}")]
        in (WORKER_GROUPS["event_writer"])
    )
    assert by_key[("GET", f"{V3}/sync")] in WORKER_GROUPS["sync"]
    assert WORKER_GROUPS["sync"] == {"sync", "health", "replication"}
    assert groups_for_app(None) is None
