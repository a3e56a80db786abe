"""Bulk import of a snapshot's lines, all or nothing: straight into the tables when they hold nothing of the
e-shop's yet, else staged and merged after a clean end of stream.

Everything happens in one transaction, so a bad file, a failure or a killed worker roll everything back:
the tables are as they were and a rerun starts afresh.

A fresh import (no row of that installation and resource yet) has nothing to merge with: on PostgreSQL the
documents are COPYed straight into their table, and their items into a spool file on disk that is COPYed
into the item table at the end (one connection runs one COPY at a time). A thread decompresses and parses
the file while the main one encodes rows and PostgreSQL stores them. A code that appears twice, or a row
that another worker inserted meanwhile, breaks the unique index: the fresh attempt is rolled back
(DirectImportConflict) and the caller reads the file again through the staging path.

Otherwise rows go into temporary staging tables while the file streams in (PostgreSQL: `COPY`; other
databases: batched inserts), so memory stays flat whatever the file's size. Only when the stream ended
cleanly are they merged with `INSERT … ON CONFLICT`, never replacing a newer `change_time` with an older one.

The JSON column is the expensive part: the staging table keeps each line as it came and the merge
converts it to `jsonb` once, as a direct `COPY` into the table would.

The SQL here is assembled from identifiers of our own models and constants (hence the S608 waivers);
every value travels as a parameter.
"""

from __future__ import annotations

import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, NoReturn, cast

import orjson
import psycopg
from django.db import IntegrityError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model
from django.utils import timezone

from installations.models import Installation
from shoptet_api.jobs import ResultFileError
from sync.documents import InvalidDocument, Resource, items_of

STAGE = "sync_stage"
MERGED = "sync_merged"
PORTABLE_BATCH = 500
PROGRESS_EVERY = 2000
# Parsed documents travel from the parsing thread in batches; a few batches in flight keep memory flat.
PARSED_BATCH = 200
PARSED_BATCHES_AHEAD = 8
# Documents per COPY statement of a fresh import: their ids are reserved before it starts.
DIRECT_COPY_DOCUMENTS = 5000
SPOOL_CHUNK = 1024 * 1024
# jsonb's binary input format: a version byte, then the JSON text.
JSONB_VERSION = b"\x01"

Progress = Callable[[int], None]
Parsed = tuple[dict[str, Any], bytes, list[dict[str, Any]]]


class DirectImportConflict(Exception):
    """A fresh import met a row it would duplicate (a code twice in the file, a concurrent insert); nothing
    was changed, and the file has to be read again through the staging path."""


@dataclass
class ImportCounts:
    received: int = 0
    imported: int = 0
    skipped: int = 0
    deleted: int = 0


def import_lines(
    *,
    installation: Installation,
    resource: Resource,
    lines: Iterable[bytes],
    full_snapshot_at: datetime | None = None,
    progress: Progress | None = None,
    direct: bool = True,
) -> ImportCounts:
    """Import every line (one Shoptet document each) into the resource's tables, all or nothing.

    With `full_snapshot_at` the lines are the e-shop's complete list as of that moment: documents that
    are missing from it and were not changed since are marked deleted.
    Raises ResultFileError (and changes nothing) when a line is not a document. With `direct`, a fresh
    import goes straight into the tables and may raise DirectImportConflict (changing nothing).
    """
    layout = _Layout(resource)
    if direct and connection.vendor == "postgresql":
        with transaction.atomic():
            if not _has_rows(layout, installation):
                return _import_direct(installation, layout, lines, progress)
    counts = ImportCounts()
    synced_at = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        _drop_temporary_tables(cursor)
        cursor.execute(layout.create_stage_sql())
        writer = _CopyWriter(cursor, layout) if connection.vendor == "postgresql" else _BatchWriter(cursor, layout)
        stream = iter(lines)
        with writer:
            for raw in stream:
                if raw.isspace():
                    continue
                counts.received += 1
                try:
                    parsed = _parse(raw, counts.received, resource)
                except ResultFileError as error:
                    _raise_file_error(stream, error)
                writer.add(counts.received, *parsed)
                if progress is not None and counts.received % PROGRESS_EVERY == 0:
                    progress(counts.received)
        if progress is not None:
            progress(counts.received)
        merger = _Merger(cursor, layout, installation)
        counts.imported = merger.merge(synced_at)
        counts.skipped = counts.received - counts.imported
        if full_snapshot_at is not None:
            counts.deleted = merger.mark_missing_deleted(full_snapshot_at)
        _drop_temporary_tables(cursor)
    return counts


def _has_rows(layout: _Layout, installation: Installation) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {layout.doc_table} WHERE installation_id = %s LIMIT 1", [installation.pk])  # noqa: S608 - our identifiers
        return cursor.fetchone() is not None


def _import_direct(
    installation: Installation, layout: _Layout, lines: Iterable[bytes], progress: Progress | None
) -> ImportCounts:
    """COPY the documents straight into their table and the items, spooled, into theirs; one transaction."""
    counts = ImportCounts()
    synced_at = timezone.now()
    parser = _ParsingThread(lines, layout.resource)
    try:
        with (
            transaction.atomic(),
            connection.cursor() as cursor,
            tempfile.TemporaryFile(prefix="import-items-") as spool,
        ):
            items = _ItemSpool(cursor, layout, installation.pk, spool)
            documents = parser.documents()
            while True:
                # Ids first, then the documents streamed into the COPY until they are used up: nothing is
                # held back, and an id left over at the end is a gap in the sequence, as a rollback leaves.
                ids = _reserve_ids(cursor, layout.doc_table, DIRECT_COPY_DOCUMENTS)
                written = _copy_documents(
                    cursor, layout, installation.pk, synced_at, zip(ids, documents, strict=False), items
                )
                counts.received += written
                if progress is not None:
                    progress(counts.received)
                if written < len(ids):
                    break
            items.copy_into_table()
    except (IntegrityError, psycopg.IntegrityError) as error:  # the COPY's errors come from psycopg itself
        raise DirectImportConflict(str(error)) from error
    finally:
        parser.stop()
    if progress is not None:
        progress(counts.received)
    counts.imported = counts.received
    return counts


def _reserve_ids(cursor: CursorWrapper, table: str, count: int) -> list[int]:
    """Ids from the table's own sequence, taken before the COPY so that the items can name their document."""
    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
        [table, count],
    )
    return [row[0] for row in cursor.fetchall()]


def _copy_documents(
    cursor: CursorWrapper,
    layout: _Layout,
    installation_id: int,
    synced_at: datetime,
    documents: Iterable[tuple[int, Parsed]],
    items: _ItemSpool,
) -> int:
    """COPY the documents (with their ids) and spool their items; returns how many."""
    written = 0
    columns = ", ".join(["id", "installation_id", "code", *layout.doc_columns, "data", "synced_at"])
    with cursor.cursor.copy(f"COPY {layout.doc_table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        # The line goes as jsonb's binary input (version byte + text): no decoding or escaping on our side.
        copy.set_types(
            ["int8", "int8", "text", *(_stage_type(field) for field in layout.doc_fields), "bytea", "timestamptz"]
        )
        write_row = copy.write_row
        names = layout.doc_names
        for document_id, (values, raw, document_items) in documents:
            write_row(
                (
                    document_id,
                    installation_id,
                    values["code"],
                    *(values[name] for name in names),
                    JSONB_VERSION + raw,
                    synced_at,
                )
            )
            items.add(document_id, document_items)
            written += 1
    return written


class _ItemSpool:
    """The items of a fresh import in COPY's binary format on disk, COPYed into their table at the end."""

    def __init__(self, cursor: CursorWrapper, layout: _Layout, installation_id: int, spool: IO[bytes]) -> None:
        self.cursor = cursor
        self.layout = layout
        self.installation_id = installation_id
        self.spool = spool
        self.columns = ["installation_id", layout.parent_column, "position", *layout.item_columns]
        self._copy = psycopg.Copy(cursor.cursor, binary=True, writer=psycopg.copy.FileWriter(spool))
        self._copy.set_types(["int8", "int8", "int2", *(_stage_type(field) for field in layout.item_fields)])
        self._copy.__enter__()
        self.rows = 0

    def add(self, document_id: int, items: list[dict[str, Any]]) -> None:
        names = self.layout.item_names
        write_row = self._copy.write_row
        for item in items:
            write_row((self.installation_id, document_id, item["position"], *(item[name] for name in names)))
        self.rows += len(items)

    def copy_into_table(self) -> None:
        self._copy.__exit__(None, None, None)
        if not self.rows:
            return
        self.spool.seek(0)
        sql = f"COPY {self.layout.item_table} ({', '.join(self.columns)}) FROM STDIN (FORMAT BINARY)"
        with self.cursor.cursor.copy(sql) as copy:
            while chunk := self.spool.read(SPOOL_CHUNK):
                copy.write(chunk)


class _ParsingThread:
    """Decompresses and parses the lines in a thread of its own while the caller's thread COPYs.

    Batches go through a bounded queue, so the parser is at most a few batches ahead and memory stays flat.
    A line that is not a document ends the stream with its ResultFileError, raised in the caller's thread.
    """

    _END = object()

    def __init__(self, lines: Iterable[bytes], resource: Resource) -> None:
        self.lines = lines
        self.resource = resource
        self.batches: queue.Queue[Any] = queue.Queue(maxsize=PARSED_BATCHES_AHEAD)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="snapshot-parser", daemon=True)
        self.thread.start()

    def documents(self) -> Iterator[Parsed]:
        """The parsed documents in the file's order."""
        while True:
            batch = self.batches.get()
            if batch is self._END:
                return
            if isinstance(batch, BaseException):
                raise batch
            yield from batch

    def stop(self) -> None:
        self.stopping.set()
        while self.thread.is_alive():
            try:
                self.batches.get(timeout=0.1)  # unblock a parser waiting for room in the queue
            except queue.Empty:
                pass
        self.thread.join()

    def _run(self) -> None:
        try:
            self._parse_all()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread, which raises it
            self._put(error)
        else:
            self._put(self._END)

    def _parse_all(self) -> None:
        batch: list[Parsed] = []
        line = 0
        stream = iter(self.lines)
        for raw in stream:
            if raw.isspace():
                continue
            line += 1
            try:
                batch.append(_parse(raw, line, self.resource))
            except ResultFileError as error:
                _raise_file_error(stream, error)
            if len(batch) >= PARSED_BATCH:
                if not self._put(batch):
                    return
                batch = []
        if batch:
            self._put(batch)

    def _put(self, item: Any) -> bool:
        """Hand an item over; False once the caller has stopped listening."""
        while not self.stopping.is_set():
            try:
                self.batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def _parse(raw: bytes, line: int, resource: Resource) -> Parsed:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ResultFileError(f"line {line} is not JSON ({error})") from error
    try:
        values = resource.fields(document)
    except InvalidDocument as error:
        raise ResultFileError(f"line {line} is not a document: {error}") from error
    return values, raw, items_of(document)


def _raise_file_error(stream: Iterator[bytes], error: ResultFileError) -> NoReturn:
    """A line that is no document may be the first sign of a damaged file: say so when the rest shows it."""
    try:
        for _ in stream:
            pass
    except ResultFileError as damaged:
        raise damaged from error
    raise error


def _drop_temporary_tables(cursor: CursorWrapper) -> None:
    # PostgreSQL drops them at commit too, but one transaction may hold several imports (tests, commands).
    schema = "pg_temp" if connection.vendor == "postgresql" else "temp"
    cursor.execute(f"DROP TABLE IF EXISTS {schema}.{STAGE}")
    cursor.execute(f"DROP TABLE IF EXISTS {schema}.{MERGED}")


# Staging column types by Django field type; PostgreSQL's names, which SQLite accepts as well.
_STAGE_TYPES = {
    "CharField": "text",
    "TextField": "text",
    "DecimalField": "numeric",
    "DateTimeField": "timestamptz",
    "DateField": "date",
    "BooleanField": "bool",
    "IntegerField": "int4",
    "PositiveIntegerField": "int4",
    "SmallIntegerField": "int2",
    "PositiveSmallIntegerField": "int2",
    "BigIntegerField": "int8",
    "PositiveBigIntegerField": "int8",
}


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    return cast("Field[Any, Any]", model._meta.get_field(name))


def _stage_type(field: Field[Any, Any]) -> str:
    return _STAGE_TYPES[field.get_internal_type()]


class _Layout:
    """The staging table: one row per document (`pos` null) and one per item (`pos` = its position).

    Columns: `seq` (line number), `pos`, `code` (the document's), `d_<column>` of the document, `data`
    (the line as it came: bytes on PostgreSQL, text elsewhere), `i_<column>` of the item.
    """

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.doc_table = resource.model._meta.db_table
        self.item_table = resource.item_model._meta.db_table
        self.parent_column = str(_field(resource.item_model, resource.parent_field).column)
        self.doc_fields = [_field(resource.model, name) for name in resource.columns[1:]]
        self.item_fields = [_field(resource.item_model, name) for name in resource.item_columns if name != "position"]
        self.doc_names = [field.name for field in self.doc_fields]
        self.item_names = [field.name for field in self.item_fields]
        self.doc_columns = [str(field.column) for field in self.doc_fields]
        self.item_columns = [str(field.column) for field in self.item_fields]
        self.stage_columns = [
            "seq",
            "pos",
            "code",
            *(f"d_{column}" for column in self.doc_columns),
            "data",
            *(f"i_{column}" for column in self.item_columns),
        ]
        self.doc_padding = (None,) * (len(self.doc_fields) + 1)
        self.item_padding = (None,) * len(self.item_fields)
        data_type = "bytea" if connection.vendor == "postgresql" else "text"
        self.stage_types = [
            "int4",
            "int4",
            "text",
            *(_stage_type(field) for field in self.doc_fields),
            data_type,
            *(_stage_type(field) for field in self.item_fields),
        ]

    def create_stage_sql(self) -> str:
        columns = ", ".join(f"{name} {kind}" for name, kind in zip(self.stage_columns, self.stage_types, strict=True))
        temporary = "ON COMMIT DROP" if connection.vendor == "postgresql" else ""
        return f"CREATE TEMPORARY TABLE {STAGE} ({columns}) {temporary}"

    def doc_row(self, seq: int, values: dict[str, Any], data: bytes | str) -> tuple[Any, ...]:
        return (seq, None, values["code"], *(values[name] for name in self.doc_names), data, *self.item_padding)

    def item_row(self, seq: int, code: str, item: dict[str, Any]) -> tuple[Any, ...]:
        return (seq, item["position"], code, *self.doc_padding, *(item[name] for name in self.item_names))


class _CopyWriter:
    """PostgreSQL: one binary `COPY … FROM STDIN` for the whole file; psycopg sends as it goes.

    Binary, because then the line's bytes go to the server as they are: no decoding, no escaping.
    """

    def __init__(self, cursor: CursorWrapper, layout: _Layout) -> None:
        self.cursor = cursor
        self.layout = layout

    def __enter__(self) -> _CopyWriter:
        # The staged line is read once, by the merge: store it uncompressed, or lz4-compressed where the
        # server has lz4 (cheaper than spilling it uncompressed), never with the slow default (pglz).
        storage = "COMPRESSION lz4" if has_lz4(self.cursor) else "STORAGE EXTERNAL"
        self.cursor.execute(f"ALTER TABLE {STAGE} ALTER COLUMN data SET {storage}")
        sql = f"COPY {STAGE} ({', '.join(self.layout.stage_columns)}) FROM STDIN (FORMAT BINARY)"
        self._copy_context = self.cursor.cursor.copy(sql)
        self._copy = self._copy_context.__enter__()
        self._copy.set_types(self.layout.stage_types)
        return self

    def add(self, seq: int, values: dict[str, Any], data: bytes, items: list[dict[str, Any]]) -> None:
        write_row = self._copy.write_row
        layout = self.layout
        write_row(layout.doc_row(seq, values, data))
        code = values["code"]
        for item in items:
            write_row(layout.item_row(seq, code, item))

    def __exit__(self, *exc_info: Any) -> None:
        self._copy_context.__exit__(*exc_info)


class _BatchWriter:
    """Any other database (SQLite in embedded mode): batched inserts, values prepared by the model fields."""

    def __init__(self, cursor: CursorWrapper, layout: _Layout) -> None:
        self.cursor = cursor
        self.layout = layout
        self.rows: list[tuple[Any, ...]] = []
        placeholders = ", ".join(["%s"] * len(layout.stage_columns))
        self.sql = f"INSERT INTO {STAGE} ({', '.join(layout.stage_columns)}) VALUES ({placeholders})"  # noqa: S608 - our identifiers

    def __enter__(self) -> _BatchWriter:
        return self

    def add(self, seq: int, values: dict[str, Any], data: bytes, items: list[dict[str, Any]]) -> None:
        layout = self.layout
        prepared = {field.name: field.get_db_prep_save(values[field.name], connection) for field in layout.doc_fields}
        prepared["code"] = values["code"]
        self.rows.append(layout.doc_row(seq, prepared, data.decode()))
        for item in items:
            item_prepared = {
                field.name: field.get_db_prep_save(item[field.name], connection) for field in layout.item_fields
            }
            item_prepared["position"] = item["position"]
            self.rows.append(layout.item_row(seq, values["code"], item_prepared))
        if len(self.rows) >= PORTABLE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.cursor.executemany(self.sql, self.rows)
            self.rows = []

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is None:
            self._flush()


class _Merger:
    def __init__(self, cursor: CursorWrapper, layout: _Layout, installation: Installation) -> None:
        self.cursor = cursor
        self.layout = layout
        self.installation_id = installation.pk

    def merge(self, synced_at: datetime) -> int:
        """Upsert the staged documents that are newer than ours and replace their items; returns how many."""
        # The statistics of our tables lag behind a big import (the first one of a tenant, or into a fresh
        # database), and a plan made for a "tiny" table would rescan the staging table once per row.
        # With these indexes every join is an index lookup whatever the planner believes.
        self.cursor.execute(f"CREATE INDEX {STAGE}_code ON {STAGE} (code) WHERE pos IS NULL")
        self._analyze(STAGE)
        self._drop_duplicates()
        if connection.vendor == "postgresql":
            self._upsert_returning(synced_at)
        else:
            self._upsert_portable(synced_at)
        self.cursor.execute(f"CREATE INDEX {MERGED}_id ON {MERGED} (id)")
        self._analyze(MERGED)
        self.cursor.execute(f"SELECT count(*) FROM {MERGED}")  # noqa: S608 - our identifiers
        merged = int(self.cursor.fetchone()[0])
        if merged:
            self._replace_items()
        return merged

    def mark_missing_deleted(self, snapshot_at: datetime) -> int:
        """Documents missing from a complete snapshot are gone, unless they changed after it was taken."""
        table = self.layout.doc_table
        self.cursor.execute(
            f"UPDATE {table} SET deleted_at = %s"  # noqa: S608 - our identifiers
            f" WHERE installation_id = %s AND deleted_at IS NULL AND (change_time IS NULL OR change_time < %s)"
            f" AND NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE s.pos IS NULL AND s.code = {table}.code)",
            [snapshot_at, self.installation_id, snapshot_at],
        )
        return int(self.cursor.rowcount)

    def _analyze(self, table: str) -> None:
        # PostgreSQL keeps no statistics of temporary tables until they are analysed.
        if connection.vendor == "postgresql":
            self.cursor.execute(f"ANALYZE {table}")

    def _drop_duplicates(self) -> None:
        """A code twice in one file would make the upsert touch a row twice: keep its newest line."""
        self.cursor.execute(f"SELECT 1 FROM {STAGE} WHERE pos IS NULL GROUP BY code HAVING count(*) > 1 LIMIT 1")  # noqa: S608 - our identifiers
        if self.cursor.fetchone() is None:
            return
        self.cursor.execute(
            f"DELETE FROM {STAGE} WHERE seq IN (SELECT seq FROM ("  # noqa: S608 - our identifiers
            f" SELECT seq, row_number() OVER (PARTITION BY code ORDER BY d_change_time DESC NULLS LAST, seq DESC) AS n"
            f" FROM {STAGE} WHERE pos IS NULL) ranked WHERE n > 1)"
        )

    def _columns(self) -> tuple[str, str]:
        """The target's column list and the matching staged expressions."""
        columns = self.layout.doc_columns
        json = "convert_from(s.data, 'UTF8')::jsonb" if connection.vendor == "postgresql" else "s.data"
        target = ", ".join(["installation_id", "code", *columns, "data", "deleted_at", "synced_at"])
        source = ", ".join(["%s", "s.code", *(f"s.d_{column}" for column in columns), json, "NULL", "%s"])
        return target, source

    def _assignments(self) -> str:
        columns = [*self.layout.doc_columns, "data", "deleted_at", "synced_at"]
        return ", ".join(f"{column} = excluded.{column}" for column in columns)

    def _upsert_returning(self, synced_at: datetime) -> None:
        """PostgreSQL: one statement; the conflict clause decides row by row under the row's lock."""
        table = self.layout.doc_table
        target, source = self._columns()
        code_type = self.layout.resource.model._meta.get_field("code").db_type(connection)
        self.cursor.execute(f"CREATE TEMPORARY TABLE {MERGED} (id bigint, code {code_type}) ON COMMIT DROP")
        self.cursor.execute(
            f"WITH upserted AS ("  # noqa: S608 - our identifiers
            f" INSERT INTO {table} AS t ({target}) SELECT {source} FROM {STAGE} s WHERE s.pos IS NULL"
            f" ON CONFLICT (installation_id, code) DO UPDATE SET {self._assignments()}"
            f" WHERE {_NEWER.format(new='excluded.change_time')}"
            f" RETURNING t.id, t.code"
            f") INSERT INTO {MERGED} (id, code) SELECT id, code FROM upserted",
            [self.installation_id, synced_at],
        )

    def _upsert_portable(self, synced_at: datetime) -> None:
        """Without RETURNING in a CTE: decide first, then upsert. SQLite serialises writers, so nothing
        changes in between."""
        table = self.layout.doc_table
        target, source = self._columns()
        self.cursor.execute(f"CREATE TEMPORARY TABLE {MERGED} (id bigint, code text)")
        self.cursor.execute(
            f"INSERT INTO {MERGED} (code) SELECT s.code FROM {STAGE} s"  # noqa: S608 - our identifiers
            f" LEFT JOIN {table} t ON t.installation_id = %s AND t.code = s.code"
            f" WHERE s.pos IS NULL AND (t.id IS NULL OR {_NEWER.format(new='s.d_change_time')})",
            [self.installation_id],
        )
        self.cursor.execute(
            f"INSERT INTO {table} ({target}) SELECT {source} FROM {STAGE} s"  # noqa: S608 - our identifiers
            f" WHERE s.pos IS NULL AND s.code IN (SELECT code FROM {MERGED})"
            f" ON CONFLICT (installation_id, code) DO UPDATE SET {self._assignments()}",
            [self.installation_id, synced_at],
        )
        self.cursor.execute(
            f"UPDATE {MERGED} SET id ="  # noqa: S608 - our identifiers
            f" (SELECT t.id FROM {table} t WHERE t.installation_id = %s AND t.code = {MERGED}.code)",
            [self.installation_id],
        )

    def _replace_items(self) -> None:
        layout = self.layout
        self.cursor.execute(
            f"DELETE FROM {layout.item_table} WHERE {layout.parent_column} IN (SELECT id FROM {MERGED})"  # noqa: S608 - our identifiers
        )
        columns = ", ".join(["installation_id", layout.parent_column, "position", *layout.item_columns])
        staged = ", ".join(["%s", "m.id", "s.pos", *(f"s.i_{column}" for column in layout.item_columns)])
        self.cursor.execute(
            f"INSERT INTO {layout.item_table} ({columns}) SELECT {staged}"  # noqa: S608 - our identifiers
            f" FROM {STAGE} s JOIN {MERGED} m ON m.code = s.code WHERE s.pos IS NOT NULL",
            [self.installation_id],
        )


# The rule of Document.accepts: a deleted row returns only for a version changed after the deletion;
# otherwise an equal or newer change_time wins. `t` is the stored row, `{new}` the incoming change time.
_NEWER = (
    "((t.deleted_at IS NULL AND (t.change_time IS NULL OR {new} >= t.change_time))"
    " OR (t.deleted_at IS NOT NULL AND {new} > t.deleted_at))"
)


def has_lz4(cursor: CursorWrapper) -> bool:
    """Whether this PostgreSQL server was built with lz4 (then it can compress TOAST with it)."""
    cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
    row = cursor.fetchone()
    return bool(row and row[0])
