"""One connection's protocol state machine (sans-I/O).

``Session.receive(text)`` returns what the adapter must do, as plain values: send a frame,
close, publish an operator command, or load a snapshot for a new subscription. The
adapter performs them in order; nothing here awaits.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from events.errors import ProtocolError
from events.records import AlertCommand
from ws.hub import ClientState, Hub, Subscription
from ws.protocol import (
    CLOSE_AUTH_FAILED,
    Auth,
    Command,
    Ping,
    Role,
    Subscribe,
    Unsubscribe,
    error_frame,
    parse_client_message,
    parse_token_role,
)


@dataclass(frozen=True, slots=True)
class SendFrame:
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseConnection:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class PublishCommand:
    command: AlertCommand
    request_id: str | None


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """Read the snapshot for ``sub`` (as of channel sequence ``seq``), send it, then mark
    the subscription ready. ``reason`` says why a resume was not possible, if one was asked."""

    sub: Subscription
    seq: int
    reason: str | None


Output = SendFrame | CloseConnection | PublishCommand | LoadSnapshot


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 16 * 1024
    max_subscriptions: int = 16


class Session:
    def __init__(
        self,
        hub: Hub,
        tokens: Mapping[str, str],
        limits: Limits,
        *,
        preauth_token: str | None = None,
    ) -> None:
        self.hub = hub
        self.client: ClientState = hub.add_client()
        self._tokens = tokens
        self._limits = limits
        self.role: Role | None = None
        self.user: str | None = None
        if preauth_token is not None and not self.authenticate(preauth_token):
            raise ProtocolError("auth_failed", "unknown token")

    def authenticate(self, token: str) -> bool:
        spec = self._tokens.get(token)
        if spec is None:
            return False
        self.role, self.user = parse_token_role(spec)
        return True

    def hello(self) -> dict[str, Any]:
        return {
            "type": "welcome",
            "role": self.role,
            "user": self.user,
            "epoch": self.hub.epoch,
            "seq": self.hub.seqs(),
        }

    def close(self) -> None:
        self.hub.remove_client(self.client)

    def receive(self, raw: str | bytes) -> list[Output]:
        try:
            message = parse_client_message(raw, self._limits.max_message_bytes)
        except ProtocolError as exc:
            if self.role is None:
                # Nothing but a valid auth is acceptable before authentication.
                return [
                    SendFrame(error_frame(exc.code, exc.detail)),
                    CloseConnection(CLOSE_AUTH_FAILED, f"expected auth: {exc.code}"),
                ]
            return [SendFrame(error_frame(exc.code, exc.detail))]
        if isinstance(message, Auth):
            return self._auth(message)
        if self.role is None:
            return [
                SendFrame(error_frame("unauthenticated", "send auth first")),
                CloseConnection(CLOSE_AUTH_FAILED, "unauthenticated"),
            ]
        if isinstance(message, Subscribe):
            return self._subscribe(message)
        if isinstance(message, Unsubscribe):
            if not self.hub.unsubscribe(self.client, message.sub):
                return [SendFrame(error_frame("unknown_subscription", message.sub))]
            return [SendFrame({"type": "unsubscribed", "sub": message.sub})]
        if isinstance(message, Command):
            return self._command(message)
        assert isinstance(message, Ping)
        pong: dict[str, Any] = {"type": "pong", "time": datetime.now(UTC).isoformat()}
        if message.request_id is not None:
            pong["id"] = message.request_id
        return [SendFrame(pong)]

    def _auth(self, message: Auth) -> list[Output]:
        if self.role is not None:
            return [SendFrame(error_frame("already_authenticated", f"as {self.user}"))]
        if not self.authenticate(message.token):
            return [
                SendFrame(error_frame("auth_failed", "unknown token")),
                CloseConnection(CLOSE_AUTH_FAILED, "authentication failed"),
            ]
        return [SendFrame(self.hello())]

    def _subscribe(self, message: Subscribe) -> list[Output]:
        if message.sub in self.client.subscriptions:
            return [SendFrame(error_frame("duplicate_subscription", message.sub))]
        if len(self.client.subscriptions) >= self._limits.max_subscriptions:
            return [
                SendFrame(
                    error_frame(
                        "too_many_subscriptions", f"limit is {self._limits.max_subscriptions}"
                    )
                )
            ]
        sub, seq = self.hub.subscribe(self.client, message)
        resume = message.resume
        reason: str | None = None
        if resume is not None:
            channel = self.hub.channels[message.channel]
            if resume.epoch != self.hub.epoch:
                reason = "other_server"
            elif not channel.can_resume_from(resume.seq):
                reason = "too_old"
            else:
                # Synchronous with the registration above: nothing can slip in between.
                items = self.hub.replay_for(sub, resume.seq)
                self.hub.mark_ready(sub)
                return [
                    SendFrame(
                        {
                            "type": "resumed",
                            "sub": message.sub,
                            "channel": message.channel,
                            "epoch": self.hub.epoch,
                            "from_seq": resume.seq,
                            "seq": seq,
                            "items": RawItems(items),
                        }
                    )
                ]
        return [LoadSnapshot(sub, seq, reason)]

    def _command(self, message: Command) -> list[Output]:
        if self.role != "operator":
            return [
                SendFrame(
                    error_frame(
                        "forbidden", f"{message.command} needs role operator", message.request_id
                    )
                )
            ]
        assert self.user is not None
        command = AlertCommand(
            command_id=str(uuid.uuid4()),
            alert_id=message.alert_id,
            command=message.command,
            by=self.user,
            at=datetime.now(UTC),
            assignee=message.assignee,
            note=message.note,
        )
        return [PublishCommand(command, message.request_id)]


class RawItems(list[bytes]):
    """Pre-encoded JSON items; the adapter's encoder splices them in unchanged."""


def encode_frame(frame: dict[str, Any]) -> str:
    """JSON text of a frame; lists of pre-encoded items are spliced in as they are."""
    raw_items = frame.get("items")
    if isinstance(raw_items, RawItems):
        head = {k: v for k, v in frame.items() if k != "items"}
        head["items"] = []
        rest = orjson.dumps(head)  # ends with b'"items":[]}'
        return (rest[:-3] + b"[" + b",".join(raw_items) + b"]}").decode()
    return orjson.dumps(frame).decode()
