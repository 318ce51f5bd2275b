"""Run the pipeline's stages: the Faust processors, the ClickHouse sink, the experiment evaluator, or all.

``all`` (the default) runs the processors in this process and the sink and the experiment evaluator
in child processes, so the stages use both cores and chdb's blocking calls never touch Faust's event
loop. SIGINT/SIGTERM stop them all gracefully: outputs are flushed, rows inserted, offsets committed.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from enum import StrEnum
from pathlib import Path
from types import FrameType

from infra.groups import contributions_topic
from infra.kafka import ensure_topics, public_topic_names, quiet_client_outages
from infra.process import die_with_parent
from infra.settings import Settings

log = logging.getLogger(__name__)


class Stage(StrEnum):
    """Which part of the pipeline a worker process runs."""

    all = "all"
    process = "process"
    sink = "sink"
    experiments = "experiments"


class DataDirError(RuntimeError):
    """The processors' state folder cannot be written by this process's user."""


def prepare_data_dir(settings: Settings) -> Path:
    """Create the processors' state folder (``FEEDBACKLOOP_PIPELINE__DATA_DIR``) and prove this user
    can write there; raise :class:`DataDirError` naming the setting otherwise.

    Faust creates its folders in it (``mkdir`` without parents) when the app starts, deep inside
    its start-up; failing here first turns a bare PermissionError into a fix the user can apply.
    """
    path = settings.pipeline.data_dir.absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise DataDirError(
            f"the worker cannot write its state folder {path} ({exc.strerror or exc}) as uid {os.getuid()}: "
            "set FEEDBACKLOOP_PIPELINE__DATA_DIR to a folder this user owns (in a container: a volume "
            "owned by the image's user)"
        ) from exc
    return path


def settle_gc() -> None:
    """After start-up: move what is alive into a generation the collector never scans again, and
    collect the young generation less often.

    The processors and the sink hold many long-lived objects and make little cyclic garbage; with
    the default thresholds the cyclic collector took 15-20 % of the processors' CPU, mostly
    re-scanning state that lives until it expires (docs: MEASURED.md, the README's Performance)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_processor(settings: Settings, loglevel: str = "info") -> int:
    """Run the Faust processors until SIGINT/SIGTERM; return the exit code."""
    import faust

    from stream_processors.app import create_app

    try:
        prepare_data_dir(settings)
    except DataDirError as exc:
        log.error("%s", exc)
        return 2
    # Subscribing to a topic that does not exist yet makes Faust ignore it for good; create ours first.
    ensure_topics(settings.kafka, [*public_topic_names(settings.kafka), contributions_topic(settings)])
    app, _pipeline = create_app(settings)
    quiet_client_outages()  # aiokafka, inside Faust, logs a broker outage at ERROR ten times a second
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=True)
    settle_gc()
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def run_sink(settings: Settings) -> int:
    """Run the sink (its backend: ``sink.backend``) until SIGINT/SIGTERM; return the exit code.

    A sink on embedded ClickHouse refuses to share its consumer group (``sinks.guard``): before it
    starts, and while it runs. It then exits with ``SPLIT_EXIT_CODE``. A sink whose Kafka client is
    stuck exits with ``STALL_EXIT_CODE`` for its supervisor to restart it.
    """
    from sinks.guard import SPLIT_EXIT_CODE, SplitError, SplitWatch, check_alone
    from sinks.runner import STALL_EXIT_CODE, Sink, SinkStalledError

    try:
        check_alone(settings)
    except SplitError as exc:
        log.error("%s", exc)
        return SPLIT_EXIT_CODE
    sink = Sink(settings)
    split: list[str] = []

    def refuse(message: str) -> None:
        split.append(message)
        sink.stop()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        sink.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watch = SplitWatch(settings, refuse).start()
    settle_gc()
    try:
        sink.run()
    except SinkStalledError as exc:
        log.error("%s", exc)
        return STALL_EXIT_CODE
    finally:
        watch.stop()
    if split:
        log.error("%s", split[0])
        return SPLIT_EXIT_CODE
    return 0


def run_experiments(settings: Settings) -> int:
    """Run the experiment evaluator and regression watch until SIGINT/SIGTERM; return the exit code."""
    from experiments.service import ExperimentService

    service = ExperimentService(settings)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.run()
    return 0


def run_all(settings: Settings, loglevel: str = "info") -> int:
    """Sink and experiment evaluator in child processes, processors here; when one stops, stop the rest."""
    # The sink is started first: tools find it as the first child.
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "feedbackloop.cli", "worker", "--stage", stage, "--loglevel", loglevel],
            env=os.environ.copy(),
            preexec_fn=die_with_parent(),
        )
        for stage in (Stage.sink, Stage.experiments)
    ]
    child_failed = threading.Event()
    stopping = threading.Event()

    def watch_child(child: subprocess.Popen[bytes], stage: str) -> None:
        code = child.wait()
        if code != 0 and not stopping.is_set():
            log.error("the %s process exited with %s; stopping the processors", stage, code)
            child_failed.set()
            os.kill(os.getpid(), signal.SIGTERM)

    for child, stage in zip(children, (Stage.sink, Stage.experiments), strict=True):
        threading.Thread(target=watch_child, args=(child, stage), name=f"{stage}-watch", daemon=True).start()
    code = 1
    try:
        code = run_processor(settings, loglevel)
    finally:
        stopping.set()
        # Both finish their work in parallel: the sink inserts, the evaluator reads the last outcomes.
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    failed = [c.returncode for c in children if c.returncode not in (0, None)]
    if child_failed.is_set() or failed:
        return failed[0] if failed else 1
    return code
