"""Compress the full Shoptet objects with lz4 instead of PostgreSQL's default pglz.

A snapshot writes a few KB of JSON per document; pglz compression of it costs more than the rest of
the import together, lz4 a fraction. Only on PostgreSQL built with lz4; elsewhere nothing changes.
"""

from django.db import migrations

TABLES = ("sync_order", "sync_invoice")


def use_lz4(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        row = cursor.fetchone()
        if not (row and row[0]):
            return
        for table in TABLES:
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN data SET COMPRESSION lz4")


class Migration(migrations.Migration):
    dependencies = [("sync", "0001_initial")]

    operations = [migrations.RunPython(use_lz4, migrations.RunPython.noop, elidable=False)]
