"""Replication lag: from persisting an event to a sync worker's /sync carrying it.

    python bench/replication_lag.py [--rates 50,200,1000] [--duration 5]
        [--workers sync:2,event_writer:2] [--receivers 2] [--rooms 4]
        [--postgres URL] [--redis URL]

Starts a real deployment (``atrium generate-config --workers ...``, then
``atrium run`` and one ``atrium worker`` per worker file, on a fresh
PostgreSQL database and its own Redis channel). Receivers (``--receivers``
per sync worker, each in every room) long-poll /sync on the sync workers; a
paced sender sends messages at each rate in ``--rates`` for ``--duration``
seconds, each message through the event writer owning its room (rooms are
spread over the writers).

The lag of one (event, receiver) pair is the arrival time of the /sync
response carrying the event minus the event's ``events.received_ts`` (set
when its persisting transaction starts; same machine clock, ms). It covers
the commit, the RDATA on Redis, the worker applying the row (invalidate,
advance, notify), the long-poll computing its response and the HTTP answer.
Prints one JSON object per rate: the achieved send rate and the lag p50, p99
and max in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atrium.handlers.event_writer import writer_for_room  # noqa: E402

if TYPE_CHECKING:
    from tests.workers.support import Api, Deployment

V3 = "/_matrix/client/v3"
FILTER = quote(json.dumps({"room": {"timeline": {"limit": 5000}}, "presence": {"types": []}}))


def _api_class() -> Any:
    from tests.workers.support import Api

    return Api


class Receiver:
    """One user long-polling /sync on one sync worker, noting when events arrive."""

    def __init__(self, api: Api, rooms: set[str]) -> None:
        self.api = api
        self.rooms = rooms
        self.arrivals: dict[str, float] = {}
        self.stopped = False

    async def run(self) -> None:
        code, body = await self.api.request("GET", f"{V3}/sync?filter={FILTER}")
        assert code == 200, body
        since = body["next_batch"]
        while not self.stopped:
            code, body = await self.api.request(
                "GET", f"{V3}/sync?timeout=5000&since={quote(since)}&filter={FILTER}"
            )
            arrived = time.time() * 1000
            assert code == 200, body
            for room_id, room in body.get("rooms", {}).get("join", {}).items():
                if room_id in self.rooms:
                    for event in room["timeline"]["events"]:
                        if event["type"] == "m.room.message":
                            self.arrivals.setdefault(event["event_id"], arrived)
            since = body["next_batch"]


async def _setup(d: Deployment, session: aiohttp.ClientSession, args: argparse.Namespace) -> Any:
    master = _api_class()(session, d.url("master"))
    writers = d.of_app("event_writer") or ["master"]
    senders: list[tuple[str, Api]] = []
    rooms: list[str] = []
    for i in range(args.rooms):
        _, token = await master.register(f"sender{i}")
        sender = master.at(d.url("master"))
        sender.token = token
        wanted = writers[i % len(writers)]
        while True:
            code, body = await sender.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
            assert code == 200, body
            if writer_for_room(body["room_id"], writers) == wanted:
                break
        rooms.append(body["room_id"])
        senders.append((body["room_id"], sender.at(d.url(wanted))))
    receivers = []
    for worker in d.of_app("sync") or ["master"]:
        for j in range(args.receivers):
            _, token = await master.register(f"recv-{worker}-{j}")
            api = master.at(d.url("master"))
            api.token = token
            for room_id in rooms:
                code, body = await api.request("POST", f"{V3}/join/{quote(room_id)}")
                assert code == 200, body
            receivers.append(Receiver(api.at(d.url(worker)), set(rooms)))
    return senders, receivers


async def _send_at_rate(
    senders: list[tuple[str, Api]], rate: float, duration: float, tag: str
) -> tuple[list[str], float]:
    total = int(rate * duration)
    limit = asyncio.Semaphore(500)
    sent: list[str] = []

    async def one(i: int) -> None:
        room_id, api = senders[i % len(senders)]
        async with limit:
            code, body = await api.request(
                "PUT",
                f"{V3}/rooms/{quote(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
                {"msgtype": "m.text", "body": f"{tag} {i}"},
            )
        assert code == 200, body
        sent.append(body["event_id"])

    start = time.monotonic()
    tasks = []
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    return sent, total / (time.monotonic() - start)


def _received_ts(db_url: str, event_ids: list[str]) -> dict[str, int]:
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT event_id, received_ts FROM events WHERE event_id = ANY(%s)", (event_ids,)
            )
            return {e: int(ts) for e, ts in cur.fetchall()}
    finally:
        conn.close()


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def _run(d: Deployment, args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        senders, receivers = await _setup(d, session, args)
        polls = [asyncio.ensure_future(r.run()) for r in receivers]
        await asyncio.sleep(1)  # let every receiver park its first long-poll
        for rate in args.rates:
            sent, achieved = await _send_at_rate(senders, rate, args.duration, f"r{rate}")
            deadline = time.monotonic() + 60
            while any(len(set(sent) - r.arrivals.keys()) for r in receivers):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            persisted = _received_ts(d.db_url or "", sent)
            lags = [
                r.arrivals[e] - persisted[e]
                for r in receivers
                for e in sent
                if e in r.arrivals and e in persisted
            ]
            missing = sum(1 for r in receivers for e in sent if e not in r.arrivals)
            results.append(
                {
                    "rate_target": rate,
                    "rate_achieved": round(achieved, 1),
                    "events": len(sent),
                    "deliveries": len(lags),
                    "missing": missing,
                    "lag_ms_p50": round(statistics.median(lags), 1) if lags else None,
                    "lag_ms_p99": round(_percentile(lags, 99), 1) if lags else None,
                    "lag_ms_max": round(max(lags), 1) if lags else None,
                }
            )
            print(json.dumps(results[-1]), flush=True)
        for r in receivers:
            r.stopped = True
        for p in polls:
            p.cancel()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="50,200,1000")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--workers", default="sync:2,event_writer:2")
    parser.add_argument("--receivers", type=int, default=2, help="per sync worker")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ATRIUM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis", default=os.environ.get("ATRIUM_TEST_REDIS", "redis://127.0.0.1:6379")
    )
    parser.add_argument("--data-dir", help="keep the deployment's files (logs) here")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    # The deployment helper reads the database server from the environment.
    os.environ["ATRIUM_TEST_POSTGRES"] = args.postgres
    from tests.workers.support import Deployment

    with tempfile.TemporaryDirectory(prefix="atrium-lag-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        d = Deployment(
            data_dir,
            args.workers,
            redis_url=args.redis,
            # Presence and its pings stay out of the way.
            overrides={"replication": {"ping_interval": 5, "ping_timeout": 30}},
        )
        d.start()
        try:
            results = asyncio.run(_run(d, args))
        finally:
            d.stop()
    print(json.dumps({"workers": args.workers, "results": results}, indent=2))


if __name__ == "__main__":
    main()
