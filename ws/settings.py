"""Settings of the push server (``IOC_*`` environment variables, passed in explicitly)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from events.settings import IocSettings

# The tokens the demo works with (`ioc up`): published, so never good for a deployment.
DEMO_TOKENS = frozenset({"wall-viewer", "wall-operator"})


def default_tokens() -> dict[str, str]:
    """The demo's tokens; the read API (readapi/) takes the same IOC_WS_TOKENS."""
    return {"wall-viewer": "viewer:wall", "wall-operator": "operator:operator"}


def check_roles(tokens: dict[str, str]) -> dict[str, str]:
    for token, spec in tokens.items():
        role = spec.partition(":")[0]
        if role not in ("viewer", "operator"):
            raise ValueError(f"token {token[:4]}…: role must be viewer or operator, not {role!r}")
    return tokens


class WsSettings(IocSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    # None: snapshots come from the stream only (what this server saw since it started).
    database_url: str | None = None

    ws_host: str = "127.0.0.1"
    ws_port: int = Field(default=8080, ge=0, le=65535)  # 0 = any free port (tests)
    # token -> "viewer" | "operator", optionally ":name" (the name goes into commands' "by").
    ws_tokens: dict[str, str] = Field(default_factory=default_tokens)
    # Token the wall page uses when its own URL has no ?token=.
    ws_page_token: str = "wall-viewer"
    # A deployment (docker-compose.yml) sets this: the server then refuses to start unless
    # IOC_WS_TOKENS is set and holds none of the demo tokens, and the wall page has no
    # token of its own unless IOC_WS_PAGE_TOKEN names one of IOC_WS_TOKENS (open the wall
    # with ?token=...).
    ws_refuse_demo_tokens: bool = False
    # Browser origins allowed besides the server's own (http://host:port, localhost:port).
    ws_allowed_origins: list[str] = Field(default_factory=list)
    # Non-browser clients send no Origin header; allow them (they still need a token).
    ws_allow_missing_origin: bool = True

    ws_max_message_bytes: int = Field(default=16 * 1024, ge=256)
    # A snapshot frame stays within this many bytes (the most important items first, the
    # rest counted in "omitted"): under the 1 MiB frame limit of most websocket clients.
    ws_snapshot_max_bytes: int = Field(default=1_000_000, ge=4096)
    ws_max_subscriptions: int = Field(default=16, ge=1)
    ws_auth_timeout_s: float = Field(default=5.0, gt=0)
    # Coalescing tick: at most 1/tick update frames per channel per client per second.
    ws_tick_s: float = Field(default=0.1, gt=0)
    # A client whose send blocks this long, or whose queue holds more coalesced updates
    # than ws_max_pending, is disconnected (close code 4008).
    ws_slow_send_s: float = Field(default=5.0, gt=0)
    ws_max_pending: int = Field(default=20_000, ge=1)
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    ws_ping_timeout_s: float = Field(default=20.0, gt=0)
    # Replay buffers (records per channel) for resume after reconnect.
    ws_kpi_replay: int = Field(default=50_000, ge=1)
    ws_alert_replay: int = Field(default=5_000, ge=1)
    # Points per (kpi, scope) kept in memory for charts when the database lacks them.
    ws_history_points: int = Field(default=240, ge=1)
    # Read ioc.alerts from the beginning at start so the open alerts are known.
    ws_alerts_from_beginning: bool = True
    # At start, read ioc.kpi from this many seconds back (not from the end): a restarted
    # server then knows what was published while it was down (0: from the end).
    ws_kpi_rewind_s: float = Field(default=120.0, ge=0)
    ws_consumer_poll_ms: int = Field(default=50, ge=1)
    # The record `ioc up` writes when it restarted the broker to free its memory (Tansu;
    # ioc/broker_guard.py): the wall shows a notice for ws_broker_notice_s after it.
    ws_broker_restarts_file: Path | None = None
    ws_broker_notice_s: float = Field(default=1800.0, gt=0)

    @field_validator("ws_tokens")
    @classmethod
    def _roles_are_known(cls, tokens: dict[str, str]) -> dict[str, str]:
        return check_roles(tokens)

    @model_validator(mode="after")
    def _no_demo_tokens_when_deployed(self) -> Self:
        if not self.ws_refuse_demo_tokens:
            return self
        if "ws_tokens" not in self.model_fields_set:
            raise ValueError(
                "IOC_WS_TOKENS is not set, and with IOC_WS_REFUSE_DEMO_TOKENS the push server "
                "does not start with the demo tokens: set IOC_WS_TOKENS to your own, e.g. "
                '\'{"<random viewer token>": "viewer:wall", "<random>": "operator:alice"}\''
            )
        page_set = "ws_page_token" in self.model_fields_set
        demo = sorted(DEMO_TOKENS & set(self.ws_tokens))
        if page_set and self.ws_page_token in DEMO_TOKENS:
            demo.append(self.ws_page_token)
        if demo:
            raise ValueError(
                f"the demo token(s) {demo} are published and refused here "
                "(IOC_WS_REFUSE_DEMO_TOKENS): choose random tokens in IOC_WS_TOKENS "
                "(and IOC_WS_PAGE_TOKEN)"
            )
        if not page_set:
            self.ws_page_token = ""  # the demo's default page token: none in a deployment
        elif self.ws_page_token not in self.ws_tokens:
            raise ValueError("IOC_WS_PAGE_TOKEN must be one of the tokens of IOC_WS_TOKENS")
        return self
