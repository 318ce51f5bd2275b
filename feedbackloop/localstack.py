"""A single-node Apache Kafka (KRaft) on 127.0.0.1, run from jars fetched from Maven Central.

No Docker needed: ``up`` resolves ``org.apache.kafka:kafka_2.13`` and its runtime dependencies
with Maven into a cache, formats a data directory once, starts ``kafka.Kafka`` in the
background, waits until it answers and creates the topics. ``down`` stops only the process
``up`` started, by the PID it recorded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from infra.kafka import KafkaUnavailableError, ensure_topics, public_topic_names, wait_for_broker
from infra.settings import KafkaSettings, StackSettings


class StackError(RuntimeError):
    """The local stack could not do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class StackStatus:
    """What ``status`` found."""

    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    log_file: Path


def _kafka_home(stack: StackSettings) -> Path:
    return stack.home.resolve() / "kafka"


def _pid_file(stack: StackSettings) -> Path:
    return _kafka_home(stack) / "broker.pid"


def _log_file(stack: StackSettings) -> Path:
    return _kafka_home(stack) / "broker.log"


def jars_dir(stack: StackSettings) -> Path:
    """Where the jars of ``stack.kafka_version`` live once fetched."""
    return stack.cache_dir.expanduser().resolve() / f"kafka-{stack.kafka_version}" / "libs"


def fetch_jars(stack: StackSettings) -> Path:
    """Fetch the broker's jars into the cache unless they are there; return the folder."""
    target = jars_dir(stack)
    if (target / f"kafka_2.13-{stack.kafka_version}.jar").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (mvn) is needed once to fetch the Kafka broker's jars from Maven Central; "
            "install it (apt-get install maven) or use docker-compose where Docker is available."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=target.parent))
    pom = resources.files("feedbackloop") / "broker" / "pom.xml"
    with resources.as_file(pom) as pom_path:
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom_path),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
                f"-Dkafka.version={stack.kafka_version}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0 or not (staging / f"kafka_2.13-{stack.kafka_version}.jar").exists():
        shutil.rmtree(staging, ignore_errors=True)
        detail = (result.stdout + result.stderr).strip()[-3000:]
        raise StackError(
            f"could not fetch org.apache.kafka:kafka_2.13:{stack.kafka_version} from Maven Central "
            f"(mvn exit {result.returncode}):\n{detail}"
        )
    if target.exists():  # another process won the race; keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rename(target)
    return target


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise StackError("Java 17 or newer is needed to run the Kafka broker; none was found")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    if not match or int(match.group(1)) < 17:
        raise StackError(f"Kafka 4 needs Java 17 or newer; {java} says: {out.strip().splitlines()[0]}")
    return java


def _server_properties(stack: StackSettings, data_dir: Path) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{stack.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{stack.port},CONTROLLER://127.0.0.1:{stack.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{stack.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data_dir}",
            "num.partitions=4",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.cleaner.min.compaction.lag.ms=0",
            "",
        ]
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _is_our_broker(pid: int, stack: StackSettings) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return _alive(pid)
    return "kafka.Kafka" in cmdline and str(_kafka_home(stack)) in cmdline


def _recorded_pid(stack: StackSettings) -> int | None:
    try:
        pid = int(_pid_file(stack).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _is_our_broker(pid, stack) else None


def status(stack: StackSettings) -> StackStatus:
    """Whether the broker ``up`` started is running."""
    pid = _recorded_pid(stack)
    return StackStatus(
        running=pid is not None,
        pid=pid,
        bootstrap=f"127.0.0.1:{stack.port}",
        data_dir=_kafka_home(stack) / "data",
        log_file=_log_file(stack),
    )


def _log_tail(stack: StackSettings, lines: int = 40) -> str:
    try:
        return "\n".join(_log_file(stack).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def up(stack: StackSettings, kafka: KafkaSettings, *, timeout_s: float = 90.0) -> StackStatus:
    """Start the broker unless it runs, wait until it answers, create the public topics."""
    if _recorded_pid(stack) is None:
        _start(stack, timeout_s)
    try:
        wait_for_broker(kafka, timeout_s=timeout_s)
    except KafkaUnavailableError as exc:
        raise StackError(f"{exc}\n--- broker log ---\n{_log_tail(stack)}") from exc
    ensure_topics(kafka, public_topic_names(kafka))
    return status(stack)


def _start(stack: StackSettings, timeout_s: float) -> None:
    libs = fetch_jars(stack)
    java = _java()
    home = _kafka_home(stack)
    data_dir = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(_server_properties(stack, data_dir))
    classpath = f"{libs}/*"
    if not (data_dir / "meta.properties").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        formatted = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                uuid.uuid4().hex[:22],
                "-c",
                str(props),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            raise StackError(f"formatting the KRaft storage failed:\n{formatted.stdout}{formatted.stderr}")
    log4j = resources.files("feedbackloop") / "broker" / "log4j2.yaml"
    log4j_copy = home / "log4j2.yaml"
    log4j_copy.write_text(log4j.read_text())
    with open(_log_file(stack), "ab") as log:
        process = subprocess.Popen(
            [
                java,
                f"-Xmx{stack.heap}",
                f"-Xms{stack.heap}",
                "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={log4j_copy}",
                f"-Dkafka.logs.dir={home}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it
        )
    _pid_file(stack).write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"the broker exited with {process.returncode}:\n{_log_tail(stack)}")
        if "Kafka Server started" in _log_tail(stack, 200):
            return
        time.sleep(0.3)
    raise StackError(f"the broker did not start within {timeout_s}s:\n{_log_tail(stack)}")


def down(stack: StackSettings, *, timeout_s: float = 30.0) -> bool:
    """Stop the broker ``up`` started (SIGTERM, then SIGKILL); return whether one was running."""
    pid = _recorded_pid(stack)
    if pid is None:
        _pid_file(stack).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    _pid_file(stack).unlink(missing_ok=True)
    return True


def wipe(stack: StackSettings) -> None:
    """Delete the broker's data (only while it is down)."""
    if _recorded_pid(stack) is not None:
        raise StackError("stop the broker first (feedbackloop stack down)")
    shutil.rmtree(_kafka_home(stack) / "data", ignore_errors=True)
