"""Assembles one push-server instance: snapshot source, websocket server, Kafka bridge."""

from __future__ import annotations

import contextlib
from types import TracebackType

from events.records import AlertCommand
from ws.bridge import KafkaBridge
from ws.server import PushServer
from ws.settings import WsSettings
from ws.snapshot import DatabaseSnapshotSource, NoSnapshotSource, SnapshotSource


class WsApp:
    """``async with WsApp(settings) as app:`` serves until the block ends."""

    def __init__(self, settings: WsSettings, snapshot: SnapshotSource | None = None) -> None:
        self.settings = settings
        self.snapshot: SnapshotSource = snapshot or (
            DatabaseSnapshotSource(settings.database_url)
            if settings.database_url
            else NoSnapshotSource()
        )
        self.server = PushServer(settings, self.snapshot, self._send_command)
        self.bridge = KafkaBridge(self.server, settings.bootstrap_servers)

    async def _send_command(self, command: AlertCommand) -> None:
        await self.bridge.send_command(command)

    async def start(self) -> None:
        await self.server.start()
        try:
            await self.bridge.start()
        except BaseException:
            await self.server.stop()
            with contextlib.suppress(Exception):
                await self.bridge.stop()
            raise

    async def stop(self) -> None:
        await self.server.stop()
        await self.bridge.stop()
        await self.snapshot.close()

    async def __aenter__(self) -> WsApp:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
