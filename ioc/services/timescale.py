"""TimescaleDB: an external server (``IOC_DATABASE_URL``) or a local one we provision.

Debian 12 has no TimescaleDB package, Debian 13 has the Apache-2 edition. So a local
server runs from a minimal Debian 13 root file system built with debootstrap and kept in
the cache directory (built once, ~1 minute; every later ``up`` takes seconds). The
server runs chrooted there and listens on loopback, where the host reaches it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg

from events.errors import ConfigurationError, ServiceError
from ioc.services.ports import ensure_port_free
from ioc.services.process import ManagedProcess, wait_until
from ioc.services.status import ServiceStatus
from ioc.settings import ServiceSettings

NAME = "timescaledb"
Log = Callable[[str], None]
PG_MAJOR = 17
SUITE = "trixie"
PG_BIN = f"/usr/lib/postgresql/{PG_MAJOR}/bin"
_READY_MARKER = ".ioc-ready"
_ADVICE = (
    "set IOC_DATABASE_URL=postgresql://USER@HOST:PORT/DB to use an existing TimescaleDB, "
    "or start one with `docker compose up -d timescaledb`"
)


def rootfs_path(settings: ServiceSettings) -> Path:
    return settings.cache_dir / f"timescaledb-{SUITE}"


def _process(settings: ServiceSettings) -> ManagedProcess:
    return ManagedProcess(NAME, settings.state_dir)


def _run(argv: list[str], what: str, timeout: float = 900) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"timescaledb: {what} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise ServiceError(f"timescaledb: {what} failed (exit {proc.returncode}):\n{tail}")


def debian_mirror(settings: ServiceSettings) -> str:
    """The Debian mirror the host's own apt already uses (only that one is reachable)."""
    if settings.debian_mirror:
        return settings.debian_mirror
    candidates = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


def check_can_provision() -> None:
    """Fail with what to do instead when this machine cannot build the root fs."""
    if os.geteuid() != 0:
        raise ConfigurationError(
            f"provisioning a local TimescaleDB needs root (debootstrap and chroot); {_ADVICE}"
        )
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        raise ConfigurationError(
            f"provisioning a local TimescaleDB needs a Debian-like host with apt-get; {_ADVICE}"
        )


def provision(settings: ServiceSettings, log: Log | None = None) -> Path:
    """Build the cached Debian 13 root fs with PostgreSQL and TimescaleDB (idempotent)."""
    root = rootfs_path(settings)
    if (root / _READY_MARKER).exists():
        return root
    check_can_provision()
    say = log or (lambda _msg: None)
    if shutil.which("debootstrap") is None:
        say("installing debootstrap (apt-get)")
        _run(["apt-get", "update", "-qq"], "apt-get update")
        _run(["apt-get", "install", "-y", "-qq", "debootstrap"], "apt-get install debootstrap")
    building = root.with_name(root.name + ".partial")
    if building.exists():
        _unmount_proc(building)
        shutil.rmtree(building)
    building.parent.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror(settings)
    say(f"debootstrap {SUITE} from {mirror} (about 30 s)")
    _run(
        ["debootstrap", "--variant=minbase", SUITE, str(building), mirror],
        f"debootstrap {SUITE} from {mirror}",
    )
    say(f"installing postgresql-{PG_MAJOR} and timescaledb in the root fs (about 30 s)")
    script = (
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        f"--no-install-recommends postgresql-{PG_MAJOR} postgresql-{PG_MAJOR}-timescaledb "
        "&& apt-get clean"
    )
    _run(["chroot", str(building), "/bin/sh", "-c", script], "installing TimescaleDB")
    (building / _READY_MARKER).write_text("ok\n")
    building.rename(root)
    return root


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def _mount_proc(root: Path) -> None:
    if not _mounted(root / "proc"):
        _run(["mount", "-t", "proc", "proc", str(root / "proc")], "mounting /proc in the root fs")


def _rootfs_in_use(root: Path) -> bool:
    """True if any process runs chrooted in ``root`` (another cluster on another port)."""
    target = str(root.resolve())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == target:
                    return True
            except OSError:
                continue
    return False


def _unmount_proc(root: Path) -> None:
    if (root / "proc").exists() and _mounted(root / "proc") and not _rootfs_in_use(root):
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)


def _data_dir(settings: ServiceSettings) -> str:
    # Inside the chroot; one cluster per port so two configurations never share one.
    return f"/var/lib/ioc/pg-{settings.db_port}"


def _connect(url: str, timeout: float = 3.0) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True)


def _admin_url(settings: ServiceSettings) -> str:
    return f"postgresql://postgres@{settings.host}:{settings.db_port}/postgres"


def _accepts_connections(url: str) -> bool:
    try:
        with _connect(url, timeout=1):
            return True
    except psycopg.Error:
        return False


def up(settings: ServiceSettings, log: Log | None = None) -> bool:
    """Make the database ready (server up, database and extension created)."""
    if settings.uses_external_database:
        _prepare_external(settings)
        return False
    proc = _process(settings)
    started = False
    if proc.pid() is None:
        root = provision(settings, log)
        ensure_port_free("timescaledb", settings.host, settings.db_port, "IOC_DB_PORT")
        _mount_proc(root)
        data = _data_dir(settings)
        if not (root / data.lstrip("/") / "PG_VERSION").exists():
            (root / data.lstrip("/")).mkdir(parents=True, exist_ok=True)
            _run(["chroot", str(root), "chown", "-R", "postgres:postgres", "/var/lib/ioc"], "chown")
            _run(
                [
                    "chroot",
                    "--userspec=postgres:postgres",
                    str(root),
                    f"{PG_BIN}/initdb",
                    "-D",
                    data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                "initdb",
            )
        proc.start(
            [
                "chroot",
                "--userspec=postgres:postgres",
                str(root),
                f"{PG_BIN}/postgres",
                "-D",
                data,
                "-c",
                f"listen_addresses={settings.host}",
                "-c",
                f"port={settings.db_port}",
                "-c",
                "unix_socket_directories=",
                "-c",
                "shared_preload_libraries=timescaledb",
                "-c",
                "timescaledb.telemetry_level=off",
                "-c",
                "max_connections=200",
            ],
            marker=f"{PG_BIN}/postgres",
        )
        wait_until(
            lambda: _accepts_connections(_admin_url(settings)),
            timeout=60,
            what=f"accepting connections on {settings.host}:{settings.db_port}",
            proc=proc,
        )
        started = True
    ensure_database(_admin_url(settings), settings.database_name)
    return started


def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` with the timescaledb extension (idempotent)."""
    with _connect(admin_url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    db_url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    with _connect(db_url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")


def drop_database(admin_url: str, name: str) -> None:
    with _connect(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _prepare_external(settings: ServiceSettings) -> None:
    url = settings.effective_database_url
    try:
        with _connect(url, timeout=5) as conn:
            row = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
            if row is None:
                raise ConfigurationError(
                    "IOC_DATABASE_URL points at a PostgreSQL without the timescaledb extension; "
                    "use a TimescaleDB server (e.g. `docker compose up -d timescaledb`)"
                )
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(
            f"IOC_DATABASE_URL={_redact(url)} is unreachable ({reason}); check the address "
            "and credentials, or unset it to run a local TimescaleDB"
        ) from exc


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def down(settings: ServiceSettings) -> bool:
    if settings.uses_external_database:
        return False
    # SIGINT is PostgreSQL's "fast shutdown": it does not wait for clients to leave.
    stopped = _process(settings).stop(timeout=30, sig=signal.SIGINT)
    _unmount_proc(rootfs_path(settings))
    return stopped


def status(settings: ServiceSettings) -> ServiceStatus:
    url = settings.effective_database_url
    if settings.uses_external_database:
        address, owner = _redact(url), "external"
    else:
        address = f"{settings.host}:{settings.db_port}"
        owner = "ours" if _process(settings).pid() is not None else ""
    try:
        with _connect(url, timeout=2) as conn:
            server = conn.execute("SHOW server_version").fetchone()
            ext = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            license_row = conn.execute(
                "SELECT current_setting('timescaledb.license', true)"
            ).fetchone()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "not running"
        return ServiceStatus("timescaledb", address, False, detail=first, owner=owner)
    if ext is None:
        return ServiceStatus(
            "timescaledb", address, False, detail="timescaledb extension missing", owner=owner
        )
    version = (
        f"timescaledb {ext[0]} ({license_row[0] if license_row else '?'}), "
        f"postgresql {str(server[0]).split()[0] if server else '?'}"
    )
    return ServiceStatus("timescaledb", address, True, version=version, owner=owner or "external")
