"""Ingest keys, the sans-I/O part: secrets, their hashes, and what a key may publish.

A key is a name, a secret (sent as ``Authorization: Bearer <secret>``) and its scope: the
event types and the sources it may publish, each a list of patterns. A pattern is exact
(``vn.ioc.air.observed``) or a prefix ending in ``*`` (``vn.ioc.air.*``, ``/sensors/air/*``,
or ``*`` for anything); a ``*`` elsewhere is refused when the key is created, so that what
a pattern admits is obvious from reading it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from events.errors import ConfigurationError

# The name of a key: it becomes the MQTT account and topic subtree too (ioc/events/NAME/#),
# so it is limited to characters that are safe in both.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SECRET_BYTES = 32


# MQTT: a device writes below ioc/events/<its key's name>/ (the ACL of our Mosquitto
# allows it nothing else), and the gateway checks that key's scopes on what arrives.
MQTT_EVENTS_ROOT = "ioc/events"
# The gateway's own MQTT account (reads every device's topics): no key may take its name.
GATEWAY_MQTT_USER = "ioc-ingest"


def key_name_of_topic(topic: str) -> str | None:
    """The key name an MQTT topic is published under (ioc/events/NAME/...), or None."""
    root, _, rest = topic.partition(MQTT_EVENTS_ROOT + "/")
    name = rest.split("/", 1)[0]
    return name if not root and name else None


def new_secret() -> str:
    """A fresh secret: 256 random bits, URL-safe (printed once, never stored)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> bytes:
    """What the database stores for a secret.

    SHA-256, not a slow password hash (scrypt, bcrypt): the secrets ``ioc ingest keys add``
    makes are 256 random bits, so there is no dictionary to try and a fast hash is as safe
    as a slow one, while the gateway can check every request without spending CPU on it.
    (The one secret a person picks, the demo key, is published in the README anyway.)
    """
    return hashlib.sha256(secret.encode()).digest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"key name {name!r}: lower-case letters, digits, '-' and '_' (at most 63), "
            "starting with a letter or digit"
        )
    if name == GATEWAY_MQTT_USER:
        raise ConfigurationError(f"key name {name!r} is the ingest gateway's MQTT account")
    return name


def check_patterns(what: str, patterns: Iterable[str]) -> list[str]:
    """The patterns as given (comma-separated items split), or a clear error."""
    out = [p.strip() for item in patterns for p in item.split(",") if p.strip()]
    if not out:
        raise ConfigurationError(f"a key needs at least one {what} pattern ('*' for any)")
    for p in out:
        if "*" in p[:-1]:
            raise ConfigurationError(
                f"{what} pattern {p!r}: '*' may only end a pattern (a prefix), e.g. 'vn.ioc.air.*'"
            )
    return out


def matches(patterns: Sequence[str], value: str) -> bool:
    for p in patterns:
        if p.endswith("*"):
            if value.startswith(p[:-1]):
                return True
        elif value == p:
            return True
    return False


@dataclass(frozen=True, slots=True)
class IngestKey:
    """An active key as the gateway knows it (the secret only as its hash)."""

    name: str
    secret_hash: bytes
    types: tuple[str, ...]
    sources: tuple[str, ...]

    def refusal(self, event_type: str, source: str) -> tuple[str, str] | None:
        """None when this key may publish the event, else (reason, detail)."""
        if not matches(self.types, event_type):
            return "type_not_allowed", (
                f"key {self.name!r} may publish types {list(self.types)}, not {event_type!r}"
            )
        if not matches(self.sources, source):
            return "source_not_allowed", (
                f"key {self.name!r} may publish sources {list(self.sources)}, not {source!r}"
            )
        return None


def find_key(keys: Sequence[IngestKey], secret: str) -> IngestKey | None:
    """The key whose secret this is, or None.

    Every key's hash is compared, each in constant time, and the loop never stops early:
    how long the answer takes says nothing about how close a guess came to a real secret.
    """
    digest = hash_secret(secret)
    found: IngestKey | None = None
    for key in keys:
        if hmac.compare_digest(key.secret_hash, digest):
            found = key
    return found


def bearer_secret(authorization: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header, or None."""
    if not authorization:
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()
