"""Snapshot import throughput and memory, against a plain COPY of the same rows as the ceiling.

Runs with DATABASE_URL (PostgreSQL) from the environment (`make bench` provisions it). Generates realistic
orders (the fake Shoptet's generator: Czech customers, 3 to 6 items each, full order objects of several KB)
as gzip JSON Lines, then for 10,000 and 100,000 orders:

- imports the file into empty tables (fresh) and again with every order changed (update), each in its
  own process, through the same code path as a real snapshot (`sync.importer.import_lines`);
- COPYs the same rows (pre-rendered, so only the database works) straight into the same, emptied tables;
- has `psql` COPY the same JSON lines, decompressed, into a table of one jsonb column: the ceiling.

Reports orders/s, items/s, MB/s of decompressed JSON and peak RSS of each run, and the ratio to the ceiling.
Goal: a fresh import at 0.9 of the ceiling's rate or more, an update at half of it, peak RSS under 100 MB and
flat across sizes.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (10_000, 100_000)
TEMPLATES = 400
ESHOP_ID = 9_100_001
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
RSS_LIMIT_MB = 100
FRESH_GOAL = 0.9
UPDATE_GOAL = 0.5
CEILING_TABLE = "bench_json_lines"
# CSV with a quote and a delimiter that JSON never contains: every line arrives as it is, one value a row.
CEILING_COPY = f"\\copy {CEILING_TABLE} (data) FROM '{{path}}' (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
# Each figure is the best of this many runs: the machine may be busy with other work.
REPEAT = 2
COPY_CHUNK = 1024 * 1024


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def templates() -> list[dict[str, Any]]:
    """Realistic orders from the fake Shoptet's generator (schema-shaped, 1-4 products + shipping + payment)."""
    from tests.fakes.shoptet.data import EshopIdentity, Generator

    identity = EshopIdentity(ESHOP_ID, "Benchmark e-shop", "https://benchmark.myshoptet.com/", "info@example.cz")
    generator = Generator(identity, seed=7, start=START)
    return [generator.order(START) for _ in range(TEMPLATES)]


def order(template: dict[str, Any], number: int, *, updated: bool) -> dict[str, Any]:
    """A distinct order from a template: its own code, GUID, times and item ids; `updated` changes it."""
    created = START + timedelta(minutes=number)
    changed = created + timedelta(days=1 if updated else 0)
    document = copy.copy(template)
    document["code"] = f"2026{number:07d}"
    document["guid"] = str(uuid.UUID(int=number + 1))
    document["creationTime"] = created.strftime("%Y-%m-%dT%H:%M:%S%z")
    document["changeTime"] = changed.strftime("%Y-%m-%dT%H:%M:%S%z")
    document["items"] = [dict(item, itemId=number * 10 + index) for index, item in enumerate(template["items"])]
    if updated:
        document["status"] = {"id": -3, "name": "Vyřízena"}
        document["paid"] = True
    return document


def write_file(path: Path, count: int, shapes: list[dict[str, Any]], *, updated: bool) -> tuple[int, int]:
    """Write `count` orders as gzip JSON Lines; returns (items, decompressed bytes)."""
    items = size = 0
    with gzip.open(path, "wb", compresslevel=6) as out:
        for number in range(count):
            document = order(shapes[number % len(shapes)], number, updated=updated)
            line = orjson.dumps(document) + b"\n"
            items += len(document["items"])
            size += len(line)
            out.write(line)
    return items, size


# ---------------------------------------------------------------------------
# Measurements (each in its own process, so peak RSS is the run's own)
# ---------------------------------------------------------------------------


def child_import(path: str) -> dict[str, Any]:
    from django.db import connection
    from django.utils import timezone

    from installations.models import Installation
    from shoptet_api.jobs import ResultLines
    from sync import importer
    from sync.documents import ORDERS

    installation = Installation.objects.get(eshop_id=ESHOP_ID)
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with open(path, "rb") as raw:
        lines = ResultLines(raw)
        counts = importer.import_lines(
            installation=installation, resource=ORDERS, lines=lines, full_snapshot_at=timezone.now()
        )
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM sync_orderitem WHERE installation_id = %s", [installation.pk])
        items = cursor.fetchone()[0]
    return {
        "seconds": seconds,
        "orders": counts.imported,
        "items": items,
        "json_bytes": lines.decompressed_bytes,
        "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "baseline_kb": baseline_kb,
    }


def child_copy(orders_path: str, items_path: str) -> dict[str, Any]:
    from django.db import connection, transaction

    from sync.documents import ORDERS

    order_columns, item_columns = copy_columns(ORDERS)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        for table, columns, path in (
            ("sync_order", order_columns, orders_path),
            ("sync_orderitem", item_columns, items_path),
        ):
            with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as stream, open(path, "rb") as f:
                while chunk := f.read(COPY_CHUNK):
                    stream.write(chunk)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def copy_columns(resource_: Any) -> tuple[list[str], list[str]]:
    documents = ["id", "installation_id", *resource_.columns, "data", "synced_at"]
    items = ["installation_id", "order_id", *resource_.item_columns]
    return documents, items


def render_copy_files(path: Path, orders_out: Path, items_out: Path, installation_id: int) -> None:
    """The same rows the import stores, in COPY's text format, with ids assigned up front."""
    from django.db import connection
    from psycopg import Copy
    from psycopg.copy import FileWriter

    from shoptet_api.jobs import ResultLines
    from sync.documents import ORDERS, items_of

    order_columns, item_columns = copy_columns(ORDERS)
    now = datetime.now(UTC)
    with connection.cursor() as cursor, open(orders_out, "wb") as orders_file, open(items_out, "wb") as items_file:
        psycopg_cursor = cursor.cursor
        with (
            Copy(psycopg_cursor, binary=False, writer=FileWriter(orders_file)) as orders_copy,
            Copy(psycopg_cursor, binary=False, writer=FileWriter(items_file)) as items_copy,
            open(path, "rb") as raw,
        ):
            for number, line in enumerate(ResultLines(raw), start=1):
                document = orjson.loads(line)
                values = ORDERS.fields(document)
                row = {"id": number, "installation_id": installation_id, "data": line.decode().rstrip("\n"), **values}
                row["synced_at"] = now
                orders_copy.write_row([row[column] for column in order_columns])
                for item in items_of(document):
                    item_row = {"installation_id": installation_id, "order_id": number, **item}
                    items_copy.write_row([item_row[column] for column in item_columns])


def decompress(path: Path, out: Path) -> None:
    with gzip.open(path, "rb") as source, open(out, "wb") as target:
        while chunk := source.read(COPY_CHUNK):
            target.write(chunk)


def psql_copy(json_lines: Path) -> dict[str, Any]:
    """The ceiling: `psql` COPYs the JSON lines into one jsonb column of a logged table, one transaction."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {CEILING_TABLE} (data jsonb NOT NULL)")
        cursor.execute(f"TRUNCATE {CEILING_TABLE}")
        cursor.execute(f"VACUUM ANALYZE {CEILING_TABLE}")
    started = time.perf_counter()
    subprocess.run(
        ["psql", os.environ["DATABASE_URL"], "-q", "-v", "ON_ERROR_STOP=1", "-c", CEILING_COPY.format(path=json_lines)],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {CEILING_TABLE}")
    return {"seconds": seconds, "rss_kb": 0}


def run_child(*args: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True, cwd=ROOT
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def empty_tables() -> None:
    """Every run starts alike: empty tables, fresh statistics, and no checkpoint pending from the last run."""
    from django.db import DatabaseError, connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE sync_orderitem, sync_order RESTART IDENTITY")
        cursor.execute("VACUUM ANALYZE sync_order")
        cursor.execute("VACUUM ANALYZE sync_orderitem")
        try:
            cursor.execute("CHECKPOINT")
        except DatabaseError:  # needs superuser or pg_checkpoint; the throwaway server of `make bench` has it
            pass


def settle_tables() -> None:
    """The update meets the tables as a running system has them: vacuumed and analysed by now."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE sync_order")
        cursor.execute("VACUUM ANALYZE sync_orderitem")


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run (other processes on the machine only ever slow a run down), with the highest peak RSS."""
    fastest = min(runs, key=lambda run: run["seconds"])
    return {**fastest, "rss_kb": max(run["rss_kb"] for run in runs)}


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------


def main(sizes: tuple[int, ...] = SIZES) -> int:
    setup_django()
    from django.db import connection

    from installations.models import Installation

    if connection.vendor != "postgresql":
        print("snapshot_import: needs PostgreSQL (DATABASE_URL); `make bench` provides it", file=sys.stderr)
        return 1
    installation, _ = Installation.objects.update_or_create(
        eshop_id=ESHOP_ID, defaults={"name": "Benchmark e-shop", "oauth_token": "benchmark-only"}
    )
    shapes = templates()
    results = []
    with tempfile.TemporaryDirectory(prefix="snapshot-bench-") as scratch:
        directory = Path(scratch)
        for size in sizes:
            fresh_file, update_file = directory / f"fresh-{size}.json.gz", directory / f"update-{size}.json.gz"
            items, json_bytes = write_file(fresh_file, size, shapes, updated=False)
            write_file(update_file, size, shapes, updated=True)
            fresh_runs, update_runs, copy_runs, psql_runs = [], [], [], []
            orders_copy, items_copy = directory / "orders.copy", directory / "items.copy"
            json_lines = directory / "lines.json"
            render_copy_files(fresh_file, orders_copy, items_copy, installation.pk)
            decompress(fresh_file, json_lines)
            for _ in range(REPEAT):
                empty_tables()
                psql_runs.append(psql_copy(json_lines))
                empty_tables()
                copy_runs.append(run_child("copy", str(orders_copy), str(items_copy)))
                empty_tables()
                fresh_runs.append(run_child("import", str(fresh_file)))
                settle_tables()
                update_runs.append(run_child("import", str(update_file)))
            fresh, update, tables = best(fresh_runs), best(update_runs), best(copy_runs)
            ceiling = best(psql_runs)
            empty_tables()
            for path in (fresh_file, update_file, orders_copy, items_copy, json_lines):
                path.unlink()
            assert (fresh["orders"], fresh["items"]) == (size, items), fresh
            assert (update["orders"], update["items"]) == (size, items), update
            results.append((size, items, json_bytes, fresh, update, tables, ceiling))
    report(results)
    return 0 if passes(results) else 1


Results = list[tuple[int, int, int, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]]


def report(results: Results) -> None:
    load = " ".join(f"{figure:.2f}" for figure in os.getloadavg())
    header = f"{'orders':>8} {'run':<7} {'orders/s':>9} {'items/s':>9} {'JSON MB/s':>9} {'peak RSS':>9} {'vs psql':>8}"
    print(header)
    print("-" * len(header))
    for size, items, json_bytes, fresh, update, tables, ceiling in results:
        copy_rate = size / ceiling["seconds"]
        for name, run in (("fresh", fresh), ("update", update), ("tables", tables), ("psql", ceiling)):
            rate = size / run["seconds"]
            print(
                f"{size:>8,} {name:<7} {rate:>9,.0f} {items / run['seconds']:>9,.0f}"
                f" {json_bytes / run['seconds'] / 1e6:>9.1f} {run['rss_kb'] / 1024:>6.0f} MB {rate / copy_rate:>8.2f}"
            )
    print()
    print(
        f"Best of {REPEAT} runs each; load average {load}. fresh/update: the import, one transaction (update: every"
        " order changed). tables: the same rows, pre-rendered, COPYed straight into the emptied tables. psql (the"
        " ceiling): `psql` COPYs the decompressed JSON lines into a table of one jsonb column (its RSS not measured)."
    )
    baseline = max(fresh["baseline_kb"] for _, _, _, fresh, *_ in results) / 1024
    print(f"Peak RSS is the whole process: Django and every app loaded take {baseline:.0f} MB before the import.")


def passes(results: Results) -> bool:
    ok = True
    peaks = []
    for size, _, _, fresh, update, _, ceiling in results:
        for name, run, goal in (("fresh", fresh, FRESH_GOAL), ("update", update, UPDATE_GOAL)):
            ratio = ceiling["seconds"] / run["seconds"]
            peaks.append(run["rss_kb"] / 1024)
            if ratio < goal:
                print(f"GOAL MISSED: {size:,} {name} runs at {ratio:.2f} of psql COPY's rate (goal ≥ {goal:.2f})")
                ok = False
            if run["rss_kb"] / 1024 >= RSS_LIMIT_MB:
                print(
                    f"GOAL MISSED: {size:,} {name} peaked at {run['rss_kb'] / 1024:.0f} MB (goal < {RSS_LIMIT_MB} MB)"
                )
                ok = False
    if max(peaks) - min(peaks) > 15:
        print(f"GOAL MISSED: peak RSS not flat across sizes ({min(peaks):.0f}-{max(peaks):.0f} MB)")
        ok = False
    print("goals met" if ok else "goals missed")
    return ok


def child(argv: list[str]) -> None:
    setup_django()
    kind, *paths = argv
    result = child_import(*paths) if kind == "import" else child_copy(*paths)
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="order counts to measure")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child)
        sys.exit(0)
    sys.exit(main(tuple(arguments.sizes)))
