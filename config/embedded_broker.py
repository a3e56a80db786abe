"""The broker of embedded mode: kombu's filesystem transport, made safe for several processes at once.

kombu's filesystem transport creates a message's file under its final name and only then writes it, with
no lock the reader honours: a consumer listing the folder in between takes an empty or half-written file,
fails to parse it and the worker stops (`Unrecoverable error: JSONDecodeError`). It also moves a taken
message into the system's temporary folder, which may be another file system (a copy, so two consumers
can both take it), and a consumer that then finds the file gone stops with a `ChannelError`.

Here a message is written under a name no consumer looks at and renamed into the queue when complete,
and a consumer takes a message by renaming it into the processed folder beside the queue. A rename
within one file system is atomic: a message is seen whole or not at all, exactly one consumer wins it,
and the others move on to the next file. Message names stay as kombu writes them (`<time>_<uuid>.<queue>
.msg`), so queue lengths are still counted from the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty
from typing import IO, Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

URL = "filesystem://"
# Celery's broker_transport; given as a transport (not in the URL) because kombu refuses module paths there.
TRANSPORT = "config.embedded_broker:Transport"
PARTIAL_PREFIX = "."
PARTIAL_SUFFIX = ".partial"
UNREADABLE_SUFFIX = ".unreadable"
# How stale the listing of the queue folder may be before an empty queue is looked at again; well under
# the polling interval, so a new message waits no longer than it would for the poll anyway.
LISTING_MAX_AGE = 0.1
# How soon a worker at its prefetch limit looks again: a task's acknowledgement frees the slot any moment.
ACK_WAIT = 0.005

Bindings = list[filesystem.exchange_queue_t]


def transport_options(folder: Path) -> dict[str, object]:
    """Celery's broker_transport_options for a broker kept in `folder`."""
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        # The transport polls; half a second keeps tasks prompt and shutdown quick.
        "polling_interval": 0.5,
    }


def message_name(queue: str) -> str:
    # Zero-padded wall-clock nanoseconds sort in publishing order across processes and restarts.
    return f"{time.time_ns():020d}_{uuid.uuid4().hex}.{queue}.msg"


def write_atomically(path: str, data: bytes) -> None:
    """Write `data` to `path` so that a reader of the folder sees all of it or no file at all."""
    folder, name = os.path.split(path)
    # The leading dot and the suffix keep the partial file out of every `<time>_<uuid>.<queue>.msg` match.
    partial = os.path.join(folder, f"{PARTIAL_PREFIX}{name}{PARTIAL_SUFFIX}")
    try:
        with open(partial, "xb") as stream:
            stream.write(data)
        os.rename(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise


def read_bindings(stream: IO[bytes]) -> Bindings:
    stream.seek(0)
    # A table file another process has just created is empty until its writer, holding the lock, fills it.
    raw = stream.read()
    return [filesystem.exchange_queue_t(*row) for row in loads(raw)] if raw.strip() else []


class Channel(filesystem.Channel):
    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        # A rename into a missing folder fails like a rename of a file another consumer took; make sure
        # the only reason left is the second.
        for folder in (self.data_folder_in, self.data_folder_out, self.processed_folder):
            os.makedirs(folder, exist_ok=True)
        self._listing: dict[str, list[str]] = {}
        self._listed_at = -LISTING_MAX_AGE

    # The ignores: kombu's stubs give the virtual and the filesystem channel different signatures.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        path = os.path.join(self.data_folder_out, message_name(queue))
        try:
            write_atomically(path, dumps(payload).encode())
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        for name in self._candidates(queue):
            payload = self._take(name)
            if payload is not None:
                return payload
        raise Empty()

    def _candidates(self, queue: str) -> Iterator[str]:
        """The queue's message names, oldest first.

        Listing a folder of thousands of messages for every message, and again for each empty queue a
        worker also polls (its remote-control queue), made a backlog quadratic: one listing serves every
        queue until the queue's share is used up, and an empty share is listed again at most every
        LISTING_MAX_AGE. Names other consumers took meanwhile fail to rename and are skipped.
        """
        waiting = self._listing.get(queue)
        if not waiting and time.monotonic() - self._listed_at >= LISTING_MAX_AGE:
            self._list_folder()
            waiting = self._listing.get(queue)
        while waiting:
            yield waiting.pop()

    def _list_folder(self) -> None:
        listing: dict[str, list[str]] = {}
        for name in os.listdir(self.data_folder_in):
            # `<time>_<uuid>.<queue>.msg`: the first part holds no dot, so the rest names the queue.
            _, _, rest = name.partition(".")
            if rest.endswith(".msg") and not name.startswith(PARTIAL_PREFIX):
                listing.setdefault(rest.removesuffix(".msg"), []).append(name)
        for names in listing.values():
            names.sort(reverse=True)  # popped from the end: oldest first
        self._listing = listing
        self._listed_at = time.monotonic()

    def _take(self, name: str) -> dict[str, Any] | None:
        """The message `name`, or None when another consumer took it first or it cannot be read."""
        taken = os.path.join(self.processed_folder, name)
        try:
            os.rename(os.path.join(self.data_folder_in, name), taken)
        except FileNotFoundError:
            return None
        with open(taken, "rb") as stream:
            raw = stream.read()
        try:
            payload: dict[str, Any] = loads(raw)
        except ValueError:
            # Left by an older transport or a full disk: kept for a person to look at, never a crash.
            os.rename(taken, taken + UNREADABLE_SUFFIX)
            logger.error("Unreadable broker message %s moved aside to %s", name, taken + UNREADABLE_SUFFIX)
            return None
        if not self.store_processed:
            os.remove(taken)
        return payload

    def get_table(self, exchange: str) -> Bindings:  # type: ignore[override]
        file: Path = self._exchange_file(exchange)  # type: ignore[attr-defined]  # missing from kombu's stubs
        try:
            with file.open("rb") as stream:
                fcntl.flock(stream.fileno(), fcntl.LOCK_SH)
                return read_bindings(stream)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._edit_bindings(
            exchange, lambda bindings: bindings if binding in bindings else [binding, *bindings], create=True
        )

    def _delete(
        self, queue: str, exchange: str, routing_key: str, pattern: str | None, *args: Any, **kwargs: Any
    ) -> None:
        self._purge(queue)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._edit_bindings(exchange, lambda bindings: [kept for kept in bindings if kept != binding], create=False)

    def _edit_bindings(self, exchange: str, change: Callable[[Bindings], Bindings], *, create: bool) -> None:
        """Rewrite an exchange's table under an exclusive lock.

        kombu's own version truncates the file before it holds the lock (a reader then parses an empty
        file) and can overwrite a table another process has just created.
        """
        file: Path = self._exchange_file(exchange)  # type: ignore[attr-defined]  # missing from kombu's stubs
        self.control_folder.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(file, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
            with os.fdopen(descriptor, "r+b", buffering=0) as stream:
                fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
                before = read_bindings(stream)
                after = change(before)
                if after != before or not before:
                    stream.seek(0)
                    stream.truncate()
                    stream.write(dumps(after).encode())
        except FileNotFoundError:
            return  # nothing bound to a table that was never created
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc


class Transport(filesystem.Transport):
    Channel = Channel

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Deliver one message, waiting at most `timeout` seconds.

        kombu's virtual transport sleeps the whole polling interval whenever nothing was delivered, also
        when the reason is that the worker already holds its prefetch limit of unacknowledged tasks: with
        late acknowledgement and a prefetch of one per process, a worker then ran a handful of tasks a
        second however short they were. A worker waiting for its own tasks to finish looks again soon;
        only an empty queue folder waits for the polling interval.
        """
        cycle = self.cycle
        if cycle is None:
            raise ChannelError("the transport has no channels to drain")
        started = time.monotonic()
        while True:
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise TimeoutError() from None  # socket.timeout, which Celery expects
                time.sleep(ACK_WAIT if self._holding_prefetch_limit() else self.polling_interval or 0.0)

    def _holding_prefetch_limit(self) -> bool:
        return any(channel._consumers and not channel.qos.can_consume() for channel in self.channels or ())
