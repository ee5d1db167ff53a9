"""Apache Kafka, the production broker, as a local single-node KRaft service.

Kafka is not packaged by Debian or PyPI and its download site is not reachable from
these machines, but its jars are on Maven Central. ``up``:

1. installs Debian's JRE and Maven when ``java``/``mvn`` are missing (as root);
2. resolves the pinned broker (``kafka-pom.xml`` beside this module) with
   ``mvn dependency:copy-dependencies`` into the cache directory, once;
3. writes ``server.properties`` (one node that is broker and controller, replication 1,
   small thread pools and heap for a 2-core machine) under the state directory and
   formats the log directory once (``kafka.tools.StorageTool format --standalone``);
4. starts ``java -cp 'libs/*' kafka.Kafka server.properties`` and waits until the
   broker answers a metadata request.

Unlike Tansu, the log directory persists across restarts (topic data, committed
offsets); ``ioc services down`` stops the broker and keeps it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from events.errors import ServiceError
from ioc.services.ports import ensure_port_free, port_open
from ioc.services.process import ManagedProcess, wait_until
from ioc.settings import ServiceSettings

NAME = "kafka"
# The running broker's command line contains its main class: how a pid is recognised.
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
POM = Path(__file__).with_name("kafka-pom.xml")
# Debian 12 packages: the JRE the broker runs on, Maven to resolve it.
APT_PACKAGES = ("openjdk-17-jre-headless", "maven")

Log = Callable[[str], None]


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if match is None:  # pragma: no cover - the pom is part of the package
        raise ServiceError(f"{POM} names no <kafka.version>; restore it from git")
    return match.group(1)


def install_dir(settings: ServiceSettings) -> Path:
    """Where the resolved jars live: keyed by the pom's content, so a new pin re-resolves."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]
    return settings.cache_dir / f"kafka-{kafka_version()}-{digest}"


def libs_dir(settings: ServiceSettings) -> Path:
    return install_dir(settings) / "libs"


def work_dir(settings: ServiceSettings) -> Path:
    return settings.state_dir / "kafka"


def data_dir(settings: ServiceSettings) -> Path:
    return work_dir(settings) / "data"


def process(settings: ServiceSettings) -> ManagedProcess:
    return ManagedProcess(NAME, settings.state_dir)


def running(settings: ServiceSettings) -> bool:
    return process(settings).pid() is not None


def java_installable() -> bool:
    """True if ``up`` can run Kafka here: Java present, or apt-get usable as root."""
    if shutil.which("java") and shutil.which("mvn"):
        return True
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _run(argv: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(
            f"{what} took longer than {timeout:.0f}s; retry `ioc services up`"
        ) from exc
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-1500:]
        raise ServiceError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def ensure_java(log: Log) -> None:
    """Install Debian's JRE and Maven when missing (root only; otherwise say how)."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            f"Apache Kafka needs {' and '.join(missing)}: install them "
            f"(sudo apt-get install -y {' '.join(APT_PACKAGES)}) or use IOC_BROKER=tansu"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {' '.join(APT_PACKAGES)} (apt-get)")
    _run(["apt-get", "update", "-qq"], "apt-get update", 600, env)
    _run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], "apt-get install", 900, env)


def ensure_jars(settings: ServiceSettings, log: Log) -> Path:
    """Resolve the broker's jars with Maven into the cache (once); returns the libs dir."""
    libs = libs_dir(settings)
    stamp = install_dir(settings) / ".complete"
    if stamp.exists():
        return libs
    ensure_java(log)
    log(f"resolving Apache Kafka {kafka_version()} with Maven")
    install_dir(settings).mkdir(parents=True, exist_ok=True)
    staging = install_dir(settings) / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    _run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        "mvn dependency:copy-dependencies (Apache Kafka)",
        900,
    )
    if not any(staging.glob("kafka_2.13-*.jar")):
        raise ServiceError(f"Maven resolved no kafka_2.13 jar into {staging}; check {POM}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    stamp.write_text(kafka_version() + "\n")
    return libs


def server_properties(settings: ServiceSettings) -> str:
    host, port, ctl = settings.host, settings.broker_port, settings.effective_controller_port
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{host}:{ctl}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctl}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir(settings)),
        # One node: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # The first consumer group join happens at once instead of after 3 s.
        "group.initial.rebalance.delay.ms": "0",
        # Like Tansu (and unlike docker-compose.yml): the tests and benchmarks produce to
        # topics of their own without creating them first. The contract topics and the
        # workers' internal topics are always created explicitly, with their configs.
        "auto.create.topics.enable": "true",
        "num.partitions": "1",
        # 2 cores shared with the whole demo: small thread pools.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.replica.fetchers": "1",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "2",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        # Retention is checked every 15 s (default 5 min): a scan of ~100 partitions is
        # cheap, and the test that watches retention delete segments waits less.
        "log.retention.check.interval.ms": "15000",
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


# The broker logs a few lines per segment rolled, deleted or cleaned: over weeks that is
# an unbounded file. INFO goes to a size-capped rolling file (3 x 10 MB) under the state
# directory; the service log (``kafka.log``, whose tail `up` shows on a failed start)
# gets warnings and errors only.
LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 10MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
rootLogger.appenderRef.out.level = WARN
rootLogger.appenderRef.file.ref = FILE
# The config dumps and per-partition state changes drown the rest.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = kafka.controller
logger.controller.level = WARN
"""


def _java_options(settings: ServiceSettings) -> list[str]:
    heap = settings.kafka_heap
    return [
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        # Direct buffers (network, fetch) are bounded too: RSS stays predictable.
        "-XX:MaxDirectMemorySize=256m",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={work_dir(settings) / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={work_dir(settings) / 'logs'}",
    ]


def _cluster_id() -> str:
    # Kafka's Uuid.toString: URL-safe base64 of 16 random bytes, no padding, and never
    # starting with "-" (the tools would read it as an option).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def prepare(settings: ServiceSettings, log: Log) -> Path:
    """Jars, config and a formatted log directory; returns the config file."""
    libs = ensure_jars(settings, log)
    work = work_dir(settings)
    work.mkdir(parents=True, exist_ok=True)
    (work / "log4j2.properties").write_text(LOG4J2)
    config = work / "server.properties"
    config.write_text(server_properties(settings))
    # The controller's address is recorded in the metadata log when it is formatted
    # (--standalone): a log directory formatted for another address cannot start.
    controller = f"{settings.host}:{settings.effective_controller_port}\n"
    formatted_for = work / "formatted-for"
    if (data_dir(settings) / "meta.properties").exists() and (
        not formatted_for.exists() or formatted_for.read_text() != controller
    ):
        log("controller address changed: reformatting the Kafka log directory (records lost)")
        shutil.rmtree(data_dir(settings))
    if not (data_dir(settings) / "meta.properties").exists():
        log("formatting the Kafka log directory")
        _run(
            [
                "java",
                *_java_options(settings),
                "-cp",
                f"{libs}/*",
                STORAGE_TOOL,
                "format",
                "--standalone",
                "--cluster-id",
                _cluster_id(),
                "--config",
                str(config),
            ],
            "formatting the Kafka log directory",
            120,
        )
        formatted_for.write_text(controller)
    return config


def up(settings: ServiceSettings, log: Log) -> bool:
    """Start Kafka unless ours already runs; True if started now (topics not included)."""
    proc = process(settings)
    if proc.pid() is not None:
        return False
    ensure_port_free("broker", settings.host, settings.broker_port, "IOC_BROKER_PORT")
    ensure_port_free(
        "kafka controller",
        settings.host,
        settings.effective_controller_port,
        "IOC_CONTROLLER_PORT",
    )
    config = prepare(settings, log)
    log(f"starting Apache Kafka {kafka_version()}")
    proc.start(
        [
            "java",
            *_java_options(settings),
            "-cp",
            f"{libs_dir(settings)}/*",
            MAIN_CLASS,
            str(config),
        ],
        marker=MAIN_CLASS,
    )
    (settings.state_dir / f"{NAME}.address").write_text(settings.bootstrap_servers + "\n")
    wait_until(
        lambda: port_open(settings.host, settings.broker_port),
        timeout=90,
        what=f"listening on {settings.host}:{settings.broker_port}",
        proc=proc,
    )
    return True


def down(settings: ServiceSettings) -> bool:
    # A controlled shutdown flushes and closes the logs: a clean restart skips recovery.
    return process(settings).stop(timeout=60)
