"""Document columns say what Shoptet says: null where the object has null or nothing, not `""` or 0.

Rows mirrored before this stored `""` (and 0 items) for those; they are set to null where the stored
Shoptet object shows that the value was null or absent. A real `""` from Shoptet stays as it is.
"""

from django.db import migrations, models
from django.db.models import Q

# Column -> path of its value in the Shoptet object, per model.
TEXT_COLUMNS = {
    "order": {
        "guid": "guid",
        "status_name": "status__name",
        "email": "email",
        "currency": "price__currencyCode",
    },
    "invoice": {
        "order_code": "orderCode",
        "billing_method_name": "billingMethod__name",
        "vat_mode": "vatMode",
        "currency": "price__currencyCode",
    },
}


def _null_or_missing(path):
    return Q(**{f"data__{path}": None}) | Q(**{f"data__{path}__isnull": True})


def restore_nulls(apps, schema_editor):
    for model_name, columns in TEXT_COLUMNS.items():
        documents = apps.get_model("sync", model_name)._default_manager
        for column, path in columns.items():
            documents.filter(_null_or_missing(path), **{column: ""}).update(**{column: None})
        documents.filter(_null_or_missing("items"), item_count=0).update(item_count=None)


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0002_lz4_document_data"),
    ]

    operations = [
        migrations.AlterField(
            model_name="invoice",
            name="billing_method_name",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="currency",
            field=models.CharField(blank=True, max_length=8, null=True),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="item_count",
            field=models.PositiveIntegerField(blank=True, help_text="Null when Shoptet sent no items list.", null=True),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="order_code",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="vat_mode",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name="order",
            name="currency",
            field=models.CharField(blank=True, max_length=8, null=True),
        ),
        migrations.AlterField(
            model_name="order",
            name="email",
            field=models.CharField(blank=True, max_length=254, null=True),
        ),
        migrations.AlterField(
            model_name="order",
            name="guid",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name="order",
            name="item_count",
            field=models.PositiveIntegerField(blank=True, help_text="Null when Shoptet sent no items list.", null=True),
        ),
        migrations.AlterField(
            model_name="order",
            name="status_name",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.RunPython(restore_nulls, migrations.RunPython.noop),
    ]
