"""Embedded mode's broker under load: two worker processes share one queue folder, nothing is lost or run twice.

This module is also the Celery app the worker processes run (`celery -A tests.test_embedded_broker worker`),
and, run as a program, a bare consumer polling the queue as fast as it can. Both take the embedded broker's
configuration from the environment variable below, which the tests fill from the project's own settings,
so they speak exactly what `make run`'s worker and web speak.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.conf import settings
from kombu import Connection

from config import embedded_broker

ROOT = Path(__file__).resolve().parent.parent
CONFIG_VARIABLE = "EMBEDDED_BROKER_TEST_CONFIG"
TASKS = 20_000
WORKERS = 2
# A guard against a hang only; the assertions are about counts, never about how long it took.
GIVE_UP_AFTER = 240.0
RACED_MESSAGES = 5_000
# The publisher waits while more than this many are waiting, so the consumers stay at the newest file.
SHALLOW_QUEUE = 20
RACE_QUEUE = "race"
CRASH_MARKERS = ("Unrecoverable error", "CRITICAL", "Traceback")

# Not the current app: collected with the suite, it must not take over the project's shared tasks.
app = Celery("embedded-broker-test", set_as_current=False)
_config: dict[str, Any] = json.loads(os.environ.get(CONFIG_VARIABLE) or "{}")
if _config:
    app.conf.update(_config["celery"])


@app.task(name="tests.record_run", bind=True)
def record_run(task: Any, number: int) -> None:
    """One file per run, named after the task and the worker, so a task run twice shows up as two files."""
    (Path(_config["records"]) / f"{number}.{uuid.uuid4().hex}.{task.request.hostname}").touch()


def celery_config(broker_folder: Path) -> dict[str, Any]:
    """The embedded broker as settings.py configures it, with the project's delivery guarantees."""
    return {
        "broker_url": embedded_broker.URL,
        "broker_transport": embedded_broker.TRANSPORT,
        "broker_transport_options": embedded_broker.transport_options(broker_folder),
        "task_acks_late": settings.CELERY_TASK_ACKS_LATE,
        "task_reject_on_worker_lost": settings.CELERY_TASK_REJECT_ON_WORKER_LOST,
        "worker_prefetch_multiplier": settings.CELERY_WORKER_PREFETCH_MULTIPLIER,
        "task_serializer": settings.CELERY_TASK_SERIALIZER,
        "accept_content": settings.CELERY_ACCEPT_CONTENT,
        "task_default_queue": settings.CELERY_TASK_DEFAULT_QUEUE,
        "task_ignore_result": True,
    }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The configuration, with the folders `make run` creates before it starts anything."""
    folder = tmp_path / "broker"
    records = tmp_path / "records"
    for path in (folder / "queue", folder / "processed", records):
        path.mkdir(parents=True)
    config: dict[str, Any] = {"celery": celery_config(folder), "records": str(records)}
    app.conf.update(config["celery"])
    yield config
    app.close()


def start_worker(name: str, config: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    # Warnings and worse only: 40,000 lines of "received" and "succeeded" would only slow it down.
    options = ["-l", "warning", "--concurrency", "2", "-n", f"{name}@%h"]
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.test_embedded_broker", "worker", *options],
            cwd=ROOT,
            env={**os.environ, CONFIG_VARIABLE: json.dumps(config)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own group, so the teardown also reaches the pool's children.
            start_new_session=True,
        )


def recorded_numbers(records: Path) -> Counter[int]:
    return Counter(int(path.name.split(".", 1)[0]) for path in records.iterdir())


def recording_workers(records: Path) -> set[str]:
    return {path.name.split(".", 2)[2] for path in records.iterdir()}


def wait_for_every_task(records: Path, workers: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + GIVE_UP_AFTER
    while len(recorded_numbers(records)) < TASKS and time.monotonic() < deadline:
        for worker, log in zip(workers, logs, strict=True):
            assert worker.poll() is None, f"a worker exited with {worker.returncode}:\n{tail(log)}"
        time.sleep(0.5)


def stop(worker: subprocess.Popen[bytes]) -> int:
    """Celery's warm shutdown: the running tasks finish, nothing is taken any more."""
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=60)
    finally:
        with_group_killed(worker)


def with_group_killed(worker: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait()


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_two_workers_run_every_one_of_20000_tasks_once_without_a_crash(broker: dict[str, Any], tmp_path: Path) -> None:
    records = Path(broker["records"])
    logs = [tmp_path / f"worker-{index}.log" for index in range(WORKERS)]
    workers = [start_worker(f"worker{index}", broker, log) for index, log in enumerate(logs)]
    try:
        # Published while both consume, as web and beat publish while the worker takes.
        with app.producer_or_acquire() as producer:
            for number in range(TASKS):
                record_run.apply_async((number,), producer=producer)
        wait_for_every_task(records, workers, logs)
        exit_codes = [stop(worker) for worker in workers]
    finally:
        for worker in workers:
            with_group_killed(worker)

    outputs = [log.read_text(errors="replace") for log in logs]
    for output in outputs:
        assert not [marker for marker in CRASH_MARKERS if marker in output], output[-4000:]
    assert exit_codes == [0] * WORKERS
    runs = recorded_numbers(records)
    assert sorted(runs) == list(range(TASKS))  # none lost
    assert [number for number, count in runs.items() if count > 1] == []  # none run twice
    # Both workers took part, and the queue folder holds neither a message nor a partial write.
    assert {name.split("@")[0] for name in recording_workers(records)} == {f"worker{index}" for index in range(WORKERS)}
    broker_folder = Path(broker["celery"]["broker_transport_options"]["data_folder_in"]).parent
    assert sorted(path.name for path in (broker_folder / "queue").iterdir()) == []
    assert sorted(path.name for path in (broker_folder / "processed").iterdir()) == []


def broker_connection(celery: dict[str, Any]) -> Connection:
    return Connection(
        celery["broker_url"], transport=celery["broker_transport"], transport_options=celery["broker_transport_options"]
    )


def consume_until_told(config: dict[str, Any]) -> None:
    """Take messages as fast as possible, one line per message taken, until the stop file appears.

    Polling without pause keeps the consumer in the folder at the moment a new message's file appears, which
    is when a transport that writes in place hands out a half-written file.
    """
    records, stop_file = Path(config["records"]), Path(config["stop_file"])
    with broker_connection(config["celery"]) as connection, (records / f"{os.getpid()}.taken").open("w") as taken:
        queue = connection.SimpleQueue(RACE_QUEUE)
        while not stop_file.exists():
            try:
                message = queue.get_nowait()
            except queue.Empty:
                continue
            taken.write(f"{message.payload}\n")
            taken.flush()
            message.ack()


def taken_numbers(records: Path) -> Counter[int]:
    return Counter(int(line) for path in records.glob("*.taken") for line in path.read_text().split())


def test_consumers_polling_while_messages_are_written_take_each_one_whole_and_once(
    broker: dict[str, Any], tmp_path: Path
) -> None:
    records = Path(broker["records"])
    config = {**broker, "stop_file": str(tmp_path / "stop")}
    logs = [tmp_path / f"consumer-{index}.log" for index in range(WORKERS)]
    consumers = []
    for log in logs:
        with log.open("wb") as output:
            consumers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.test_embedded_broker"],
                    cwd=ROOT,
                    env={**os.environ, CONFIG_VARIABLE: json.dumps(config)},
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        with broker_connection(broker["celery"]) as connection:
            queue = connection.SimpleQueue(RACE_QUEUE)
            for number in range(RACED_MESSAGES):
                while queue.qsize() > SHALLOW_QUEUE and all(consumer.poll() is None for consumer in consumers):
                    time.sleep(0.001)
                queue.put(number)
        deadline = time.monotonic() + GIVE_UP_AFTER
        while sum(taken_numbers(records).values()) < RACED_MESSAGES and time.monotonic() < deadline:
            if any(consumer.poll() is not None for consumer in consumers):
                break  # one of them crashed; the assertions below say how
            time.sleep(0.2)
        Path(config["stop_file"]).touch()
        exit_codes = [consumer.wait(timeout=60) for consumer in consumers]
    finally:
        for consumer in consumers:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()

    assert exit_codes == [0] * WORKERS, "\n".join(tail(log) for log in logs)
    taken = taken_numbers(records)
    assert sorted(taken) == list(range(RACED_MESSAGES))
    assert [number for number, count in taken.items() if count > 1] == []


if __name__ == "__main__":
    consume_until_told(_config)
