"""Settings of the read API (``IOC_*`` environment variables, passed in explicitly)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from events.settings import IocSettings
from ws.settings import check_roles, default_tokens


class ReadApiSettings(IocSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:55432/ioc"
    readapi_host: str = "127.0.0.1"
    readapi_port: int = Field(default=8082, ge=0, le=65535)  # 0 = any free port (tests)
    # The push server's tokens (same variable, IOC_WS_TOKENS): one credential per client
    # for the live stream and the history. Any role may read.
    ws_tokens: dict[str, str] = Field(default_factory=default_tokens)
    # Connections to TimescaleDB; each request holds one for a single statement.
    readapi_pool_size: int = Field(default=4, ge=1, le=64)
    # A statement running longer is cancelled (the client gets a 503), so one slow
    # query cannot hold a pooled connection for ever.
    readapi_statement_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("ws_tokens")
    @classmethod
    def _roles_are_known(cls, tokens: dict[str, str]) -> dict[str, str]:
        return check_roles(tokens)
