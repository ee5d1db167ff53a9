"""Mosquitto's accounts: no anonymous access, the ingest gateway's own account, and one
device account per ingest key, limited to its topic subtree.

    ioc-ingest   reads  ioc/events/#          (the gateway; password in the state directory
                                               or IOC_MQTT_INGEST_PASSWORD)
    NAME         writes ioc/events/NAME/#     (the ingest key NAME; password = its secret)

``ioc services up`` writes the password file (hashes by ``mosquitto_passwd``) and the ACL
next to mosquitto.conf; ``ioc ingest keys add|revoke`` and ``ioc up`` write them again
from the key table and make a running Mosquitto of ours reload them (SIGHUP). The gateway
checks the key's scopes on what arrives as well (ingest/mqtt.py): a revoked key's device
that is still connected gets its messages dead-lettered within the key refresh time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from events.errors import ServiceError
from ingest.keys import GATEWAY_MQTT_USER, MQTT_EVENTS_ROOT
from ioc.services.process import ManagedProcess
from ioc.settings import ServiceSettings

GATEWAY_USER = GATEWAY_MQTT_USER
# The MQTT topic tree of events; a device writes only below ioc/events/<its key name>/.
EVENTS_ROOT = MQTT_EVENTS_ROOT


def password_file(settings: ServiceSettings) -> Path:
    return settings.state_dir / "mosquitto.passwd"


def acl_file(settings: ServiceSettings) -> Path:
    return settings.state_dir / "mosquitto.acl"


def gateway_password(settings: ServiceSettings) -> str:
    """IOC_MQTT_INGEST_PASSWORD, or a random one kept in the state directory (mode 0600)."""
    if settings.mqtt_ingest_password:
        return settings.mqtt_ingest_password
    path = settings.state_dir / "mqtt-ingest.secret"
    if not path.exists():
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def mosquitto_hash(user: str, password: str) -> str | None:
    """Mosquitto's hash of ``password`` (``$7$...``, PBKDF2-SHA512), made by mosquitto_passwd
    itself so that the format is the one this Mosquitto reads; None without the tool.

    (``-b`` puts the password on mosquitto_passwd's command line for the few milliseconds
    it runs; the tool reads it otherwise only from a terminal.)
    """
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "passwd"
        proc = subprocess.run(
            [tool, "-c", "-b", str(path), user, password], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise ServiceError(f"mosquitto_passwd failed: {proc.stderr.strip()[-300:]}")
        line = path.read_text().strip()
    return line.split(":", 1)[1]


def acl_text() -> str:
    # %u is the connecting user's name: each device account may write only below its own
    # name, and may read nothing; the gateway reads everything below the root.
    return f"user {GATEWAY_USER}\ntopic read {EVENTS_ROOT}/#\n\npattern write {EVENTS_ROOT}/%u/#\n"


def device_accounts(database_url: str) -> list[tuple[str, str]]:
    """(name, mosquitto hash) of every active key with an MQTT account; none when the key
    table cannot be read (not migrated yet)."""
    try:
        with psycopg.connect(database_url, connect_timeout=3, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name, mqtt_hash FROM ingest_keys "
                "WHERE revoked_at IS NULL AND mqtt_hash IS NOT NULL ORDER BY name"
            ).fetchall()
    except psycopg.Error:
        return []
    return [(str(name), str(digest)) for name, digest in rows]


def write_accounts(settings: ServiceSettings, devices: Sequence[tuple[str, str]]) -> None:
    """The password file and the ACL; a running Mosquitto of ours reloads them."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    gateway = mosquitto_hash(GATEWAY_USER, gateway_password(settings))
    if gateway is None:
        raise ServiceError("mosquitto_passwd is missing (Debian package mosquitto)")
    lines = [f"{GATEWAY_USER}:{gateway}"]
    lines += [f"{name}:{digest}" for name, digest in devices if name != GATEWAY_USER]
    _write_private(password_file(settings), "\n".join(lines) + "\n")
    _write_private(acl_file(settings), acl_text())
    pid = ManagedProcess("mosquitto", settings.state_dir).pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)  # Mosquitto re-reads its password file and ACL


def sync_accounts(settings: ServiceSettings, database_url: str | None = None) -> bool:
    """Write the accounts from the key table of ``database_url`` (by default the services'
    database) when our Mosquitto runs; False when it does not (nothing to update)."""
    if ManagedProcess("mosquitto", settings.state_dir).pid() is None:
        return False
    write_accounts(settings, device_accounts(database_url or settings.effective_database_url))
    return True


def _write_private(path: Path, text: str) -> None:
    # written whole, then renamed: Mosquitto never reads half a file
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def wait_for_login(
    settings: ServiceSettings, login: tuple[str, str], within_s: float = 15.0
) -> None:
    """Until ``login`` can connect to our Mosquitto: it reloads its accounts on SIGHUP,
    asynchronously, so a client made right after :func:`sync_accounts` may be refused."""
    from ioc.services.mosquitto import mqtt_ping

    deadline = time.monotonic() + within_s
    while (problem := mqtt_ping(settings.host, settings.mqtt_port, login)) is not None:
        if time.monotonic() > deadline:
            raise ServiceError(f"MQTT account {login[0]!r} cannot log in: {problem}")
        time.sleep(0.1)  # polling interval of the condition above
