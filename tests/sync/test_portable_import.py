"""The import on SQLite (embedded mode): batched inserts instead of COPY, the same merge rules."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import expected_items

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.db import connection
from installations.models import Installation
from sync import snapshots
from sync.documents import ORDERS
from sync.models import Order
from shoptet_api.jobs import ResultFileError

assert connection.vendor == "sqlite", connection.vendor
shop = Installation.objects.create(eshop_id=1, oauth_token="embedded")
other = Installation.objects.create(eshop_id=2, oauth_token="embedded")
runs = []
for name in sys.argv[1:]:
    for installation in ([shop, other] if name == "first" else [shop]):
        try:
            with open(name + ".json.gz", "rb") as stream:
                counts = snapshots.import_file(installation=installation, resource=ORDERS, stream=stream)
            runs.append([counts.received, counts.imported, counts.skipped])
        except ResultFileError as error:
            runs.append(str(error))
state = {
    str(order.installation.eshop_id) + " " + order.code: {
        "data": order.data,
        "change_time": order.change_time.isoformat(),
        "total_with_vat": str(order.total_with_vat),
        "items": [
            {k: str(v) for k, v in row.items()}
            for row in order.items.order_by("position").values(
                "position", "item_id", "item_type", "code", "name", "amount",
                "unit_price_with_vat", "total_price_with_vat", "vat_rate",
            )
        ],
    }
    for order in Order.objects.select_related("installation")
}
print(json.dumps({"runs": runs, "state": state}))
"""


def write(path: Path, documents: list[dict]) -> None:
    with gzip.open(path, "wb") as out:
        for document in documents:
            out.write(json.dumps(document, ensure_ascii=False).encode() + b"\n")


def test_the_import_on_sqlite_follows_the_same_rules(tmp_path: Path, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_eshop(3, orders=4)
    orders = [fake_shoptet.order_detail(3, code, ("notes",)) for code in sorted(fake_shoptet.eshop(3).orders)]
    newer = dict(orders[0], changeTime="2099-01-01T10:00:00+0100", paid=not orders[0]["paid"])
    older = dict(orders[1], changeTime="2000-01-01T10:00:00+0100", email="stale@example.cz")
    write(tmp_path / "first.json.gz", orders)
    write(tmp_path / "second.json.gz", [newer, older, newer])
    (tmp_path / "broken.json.gz").write_bytes(gzip.compress(b'{"code": "X"}\n')[:-5])
    database = tmp_path / "embedded.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": "",
        "DEBUG": "true",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=PROJECT_ROOT, env=env, check=True)

    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, "first", "second", "broken"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )

    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["runs"] == [
        [4, 4, 0],
        [4, 4, 0],
        [3, 1, 2],
        "the result file is truncated (Compressed file ended before the end-of-stream marker was reached)",
    ]
    expected = {**{f"1 {o['code']}": o for o in orders}, **{f"2 {o['code']}": o for o in orders}}
    expected[f"1 {newer['code']}"] = newer
    state = result["state"]
    assert {key: value["data"] for key, value in state.items()} == expected
    for key, document in expected.items():
        assert state[key]["total_with_vat"] == document["price"]["withVat"]
        assert state[key]["items"] == [{k: str(v) for k, v in row.items()} for row in expected_items(document)]
    assert state[f"1 {newer['code']}"]["change_time"] == "2099-01-01T09:00:00+00:00"
