"""Mosquitto, the MQTT broker of the MQTT ingest path (Debian package)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from events.errors import ConfigurationError, ServiceError
from ioc.services import mqtt_accounts
from ioc.services.ports import ensure_port_free, port_open
from ioc.services.process import ManagedProcess, wait_until
from ioc.services.status import ServiceStatus
from ioc.settings import ServiceSettings

NAME = "mosquitto"


def _process(settings: ServiceSettings) -> ManagedProcess:
    return ManagedProcess(NAME, settings.state_dir)


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    if shutil.which("apt-get") is None or _not_root():
        raise ConfigurationError(
            "mosquitto is not installed; install it (`sudo apt-get install mosquitto`) "
            "or point the MQTT ingest at another broker"
        )
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "mosquitto"]):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServiceError(f"mosquitto: `{' '.join(argv)}` failed: {proc.stderr[-500:]}")
    return "/usr/sbin/mosquitto"


def _not_root() -> bool:
    return os.geteuid() != 0


def version() -> str:
    try:
        out = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.TimeoutExpired, ConfigurationError, ServiceError):
        return ""
    first = out.splitlines()[0] if out else ""
    return first.split("version")[-1].strip() if "version" in first else first


def config_text(settings: ServiceSettings) -> str:
    return (
        f"listener {settings.mqtt_port} {settings.host}\n"
        # no anonymous client: the gateway and each device have an account, and the ACL
        # keeps each device below its own topic (ioc/services/mqtt_accounts.py)
        "allow_anonymous false\n"
        # Started as root, Mosquitto would switch to the user "mosquitto", which cannot read
        # the password file and ACL (0600, in our state directory): stay their owner.
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        f"password_file {mqtt_accounts.password_file(settings)}\n"
        f"acl_file {mqtt_accounts.acl_file(settings)}\n"
        "persistence false\n"
        # A persistent session's backlog (the ingest gateway restarting, or slower than a
        # burst): Mosquitto's default of 1000 queued QoS 1 messages drops the rest, which
        # publishers already had PUBACKs for (found by `ioc chaos`, docs/reliability.md).
        "max_queued_messages 1000000\n"
        "log_dest stdout\n"
    )


def up(settings: ServiceSettings) -> bool:
    proc = _process(settings)
    conf = settings.state_dir / "mosquitto.conf"
    if proc.pid() is not None:
        if conf.exists() and conf.read_text() == config_text(settings):
            return False
        # Ours, but started with another configuration (before accounts existed, say):
        # a reload would keep anonymous access, so it is started again.
        proc.stop()
    binary = mosquitto_binary()
    ensure_port_free("mosquitto", settings.host, settings.mqtt_port, "IOC_MQTT_PORT")
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # Accounts from the key table when it can be read (later changes: sync_accounts).
    mqtt_accounts.write_accounts(
        settings, mqtt_accounts.device_accounts(settings.effective_database_url)
    )
    conf.write_text(config_text(settings))
    proc.start([binary, "-c", str(conf)])
    wait_until(
        lambda: port_open(settings.host, settings.mqtt_port),
        timeout=15,
        what=f"listening on {settings.host}:{settings.mqtt_port}",
        proc=proc,
    )
    return True


def down(settings: ServiceSettings) -> bool:
    return _process(settings).stop()


def mqtt_ping(
    host: str, port: int, credentials: tuple[str, str] | None = None, timeout: float = 3.0
) -> str | None:
    """Connect with a real MQTT client (as ``credentials`` (user, password) when given);
    None if healthy, else the reason."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"ioc-health-{uuid.uuid4().hex[:8]}"
    )
    if credentials is not None:
        client.username_pw_set(*credentials)
    refused: list[str] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if reason.is_failure:
            refused.append(str(reason))

    client.on_connect = on_connect
    try:
        rc = client.connect(host, port, keepalive=5)
        if rc != 0:
            return f"connect returned {rc}"
        client.loop(timeout=timeout)
        if refused:  # e.g. "Not authorized": not our Mosquitto, or another password
            return f"login as {credentials[0] if credentials else 'anonymous'}: {refused[0]}"
        return None if client.is_connected() else "no CONNACK"
    except OSError as exc:
        return str(exc)
    finally:
        client.disconnect()


def status(settings: ServiceSettings) -> ServiceStatus:
    address = f"{settings.host}:{settings.mqtt_port}"
    owner = "ours" if _process(settings).pid() is not None else ""
    if not port_open(settings.host, settings.mqtt_port):
        return ServiceStatus("mosquitto", address, False, detail="not running", owner=owner)
    problem = mqtt_ping(
        settings.host,
        settings.mqtt_port,
        (mqtt_accounts.GATEWAY_USER, mqtt_accounts.gateway_password(settings)),
    )
    if problem:
        return ServiceStatus("mosquitto", address, False, detail=problem, owner=owner)
    return ServiceStatus(
        "mosquitto", address, True, version=f"mosquitto {version()}", owner=owner or "external"
    )
