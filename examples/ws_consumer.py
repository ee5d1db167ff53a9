"""A websocket client of the push server: follows KPI windows and, after a disconnect,
resumes by `seq` so that no record is missed (docs/ws-protocol.md, *Resume*).

Prints one JSON line per frame with the records it carries: the `snapshot` of the
subscription, then `update`s; after a reconnect a `resumed` frame with every record
published in between (or, if the server cannot replay that far back or is another
instance, a new `snapshot` with `resync`, which replaces what the client had).

    pip install websockets
    python examples/ws_consumer.py --url ws://127.0.0.1:8080/ws --token wall-viewer \
        --kpis 'air.*' --scopes 'district:*'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

FIELDS = ("kpi", "scope", "window_start", "value", "final", "revision")


class Follower:
    """One `kpi` subscription that survives reconnects."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.epoch: str | None = None  # the server instance whose seq we hold
        self.seq: int | None = None  # the last seq received: everything up to it is here

    def subscribe_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "subscribe", "sub": "kpis", "channel": "kpi"}
        if self.args.kpis:
            frame["kpis"] = self.args.kpis
        if self.args.scopes:
            frame["scopes"] = self.args.scopes
        if self.epoch is not None and self.seq is not None:
            frame["resume"] = {"epoch": self.epoch, "seq": self.seq}
        return frame

    async def session(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"op": "auth", "token": self.args.token}))
        welcome = json.loads(await ws.recv())
        if welcome["type"] != "welcome":
            raise SystemExit(f"not authenticated: {welcome}")
        await ws.send(json.dumps(self.subscribe_frame()))
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "error":
                print(f"error frame: {frame}", file=sys.stderr, flush=True)
                continue
            if kind not in ("snapshot", "resumed", "update"):
                continue  # pong, notice, and frame types added later
            if kind != "update":
                self.epoch = frame["epoch"]
            self.seq = frame["seq"]
            items = [{k: item.get(k) for k in FIELDS} for item in frame["items"]]
            extra = {k: frame[k] for k in ("from_seq", "resync") if k in frame}
            line = {"frame": kind, "seq": frame["seq"], **extra, "items": items}
            print(json.dumps(line, ensure_ascii=False), flush=True)

    async def run(self) -> None:
        backoff = self.args.retry_s
        while True:
            reason = "closed by the server"
            try:
                async with connect(self.args.url) as ws:
                    backoff = self.args.retry_s
                    await self.session(ws)
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise SystemExit(f"refused: {exc}") from exc
                reason = str(exc)  # 503: the server is starting
            except (OSError, WebSocketException) as exc:
                reason = str(exc) or type(exc).__name__
            print(f"disconnected ({reason}); retry in {backoff:.1f} s", file=sys.stderr)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 15.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--token", default="wall-viewer")
    parser.add_argument("--kpis", nargs="*", help="KPI ids, '*' allowed (default: all)")
    parser.add_argument("--scopes", nargs="*", help="scopes, '*' allowed (default: all)")
    parser.add_argument("--retry-s", type=float, default=1.0, help="first reconnect delay")
    asyncio.run(Follower(parser.parse_args(argv)).run())


if __name__ == "__main__":
    main()
