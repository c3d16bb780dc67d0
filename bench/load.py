"""Load tool: drives N concurrent clients against any Matrix homeserver URL.

    python bench/load.py --url http://127.0.0.1:8008 [--clients 20] [--messages 2000]
                         [--sync-samples 50] [--rooms 500] [--prefix run1]

Measures, through the client-server API only (so it works against Atrium,
Synapse or anything else):
- send throughput: N clients each PUT /send their share of messages into one room,
  concurrently; events/s over the whole run;
- /sync wake-up latency: a client long-polls /sync; another sends a message;
  the time from issuing the send to the /sync response carrying it (p50, p99);
- initial sync: one user in --rooms rooms; time of GET /sync without `since`:
  the first (cold) request, the median of repeats of that same request (Synapse
  answers identical /sync requests from a response cache for 2 minutes), and
  the median of requests each made distinct by its filter (timeline limits
  10, 11, ... with at most 2 events per room: the same answer, computed anew).

The server must allow registration with m.login.dummy and have its rate limits
off. Prints one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp

V3 = "/_matrix/client/v3"


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.token: str | None = None
        self.user_id: str | None = None

    async def call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, self.url + path, json=body, params=params, headers=headers
        ) as resp:
            data = await resp.json(content_type=None)
            return resp.status, data

    async def register(self, username: str) -> None:
        body: dict[str, Any] = {"username": username, "password": "bench-pw-" + username}
        status, data = await self.call("POST", f"{V3}/register", body)
        if status == 401:
            body["auth"] = {"type": "m.login.dummy", "session": data["session"]}
            status, data = await self.call("POST", f"{V3}/register", body)
        if status != 200:
            raise RuntimeError(f"register {username}: {status} {data}")
        self.token, self.user_id = data["access_token"], data["user_id"]

    async def send(self, room_id: str, body: str) -> str:
        txn = uuid.uuid4().hex
        status, data = await self.call(
            "PUT",
            f"{V3}/rooms/{quote(room_id)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": body},
        )
        if status != 200:
            raise RuntimeError(f"send: {status} {data}")
        return data["event_id"]

    async def create_room(self, **body: Any) -> str:
        status, data = await self.call("POST", f"{V3}/createRoom", body)
        if status != 200:
            raise RuntimeError(f"createRoom: {status} {data}")
        return data["room_id"]

    async def join(self, room_id: str) -> None:
        status, data = await self.call("POST", f"{V3}/join/{quote(room_id)}", {})
        if status != 200:
            raise RuntimeError(f"join: {status} {data}")

    async def sync(
        self, since: str | None = None, timeout_ms: int = 0, filter_json: str | None = None
    ) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms)}
        if since:
            params["since"] = since
        if filter_json:
            params["filter"] = filter_json
        status, data = await self.call("GET", f"{V3}/sync", params=params)
        if status != 200:
            raise RuntimeError(f"sync: {status} {data}")
        return data


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def bench_send(clients: list[Client], room_id: str, messages: int) -> dict[str, Any]:
    per_client = messages // len(clients)

    async def run(c: Client) -> list[float]:
        latencies = []
        for i in range(per_client):
            start = time.perf_counter()
            await c.send(room_id, f"load {i}")
            latencies.append(time.perf_counter() - start)
        return latencies

    start = time.perf_counter()
    results = await asyncio.gather(*(run(c) for c in clients))
    elapsed = time.perf_counter() - start
    all_lat = [x for r in results for x in r]
    return {
        "events": len(all_lat),
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(all_lat) / elapsed, 1),
        "send_p50_ms": round(_pct(all_lat, 50) * 1000, 2),
        "send_p99_ms": round(_pct(all_lat, 99) * 1000, 2),
    }


async def bench_sync_latency(
    sender: Client, syncer: Client, room_id: str, samples: int
) -> dict[str, Any]:
    # Only the timeline of rooms matters here; keep responses small.
    filt = json.dumps(
        {
            "room": {"timeline": {"limit": 5}, "state": {"lazy_load_members": True}},
            "presence": {"types": []},
        }
    )
    since = (await syncer.sync(filter_json=filt))["next_batch"]
    latencies = []
    for i in range(samples):
        marker = f"ping {i} {uuid.uuid4().hex}"
        poll = asyncio.ensure_future(_wait_for(syncer, since, marker, room_id, filt))
        # Give the long-poll time to reach the server before sending (a
        # benchmark, not a test: a short fixed pause is acceptable here).
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        await sender.send(room_id, marker)
        since, done_at = await poll
        latencies.append(done_at - start)
    return {
        "samples": samples,
        "wakeup_p50_ms": round(_pct(latencies, 50) * 1000, 2),
        "wakeup_p99_ms": round(_pct(latencies, 99) * 1000, 2),
    }


async def _wait_for(
    c: Client, since: str, marker: str, room_id: str, filt: str
) -> tuple[str, float]:
    while True:
        data = await c.sync(since=since, timeout_ms=30000, filter_json=filt)
        since = data["next_batch"]
        room = data.get("rooms", {}).get("join", {}).get(room_id, {})
        if any(
            e.get("content", {}).get("body") == marker
            for e in room.get("timeline", {}).get("events", [])
        ):
            return since, time.perf_counter()


async def bench_initial_sync(client: Client, rooms: int, runs: int = 3) -> dict[str, Any]:
    sem = asyncio.Semaphore(10)

    async def make(i: int) -> None:
        async with sem:
            room_id = await client.create_room(name=f"bench room {i}")
            await client.send(room_id, f"hello {i}")

    await asyncio.gather(*(make(i) for i in range(rooms)))

    async def timed(filter_json: str | None) -> tuple[float, int]:
        start = time.perf_counter()
        data = await client.sync(filter_json=filter_json)
        return time.perf_counter() - start, len(data.get("rooms", {}).get("join", {}))

    first, joined = await timed(None)
    repeats = [(await timed(None))[0] for _ in range(runs)]
    distinct = [
        (await timed(json.dumps({"room": {"timeline": {"limit": 10 + i}}})))[0] for i in range(runs)
    ]
    return {
        "rooms": joined,
        "initial_sync_first_ms": round(first * 1000, 1),
        "initial_sync_repeat_median_ms": round(statistics.median(repeats) * 1000, 1),
        "initial_sync_distinct_median_ms": round(statistics.median(distinct) * 1000, 1),
        "runs": runs,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    prefix = args.prefix or uuid.uuid4().hex[:6]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        clients = [Client(session, args.url) for _ in range(args.clients)]
        await asyncio.gather(*(c.register(f"{prefix}u{i}") for i, c in enumerate(clients)))
        room_id = await clients[0].create_room(preset="public_chat", name="load")
        await asyncio.gather(*(c.join(room_id) for c in clients[1:]))
        result: dict[str, Any] = {"url": args.url, "clients": args.clients}
        result["send"] = await bench_send(clients, room_id, args.messages)
        result["sync"] = await bench_sync_latency(
            clients[0], clients[1], room_id, args.sync_samples
        )
        if args.rooms:
            big = Client(session, args.url)
            await big.register(f"{prefix}many")
            result["initial_sync"] = await bench_initial_sync(big, args.rooms)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sync-samples", type=int, default=50)
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--prefix")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
