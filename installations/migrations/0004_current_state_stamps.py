"""An installation's stamps describe its current state: clear those of states it has left.

A reinstall used to keep `uninstalled_at` (and an approval `suspended_at`); the status history keeps
those moments. The rule is `installations.models.STAMPS_KEPT`, written out here as it was.
"""

from django.db import migrations

STATE_STAMPS = ("suspended_at", "uninstalled_at", "terminated_at")
STAMPS_KEPT = {
    "active": (),
    "suspended": ("suspended_at",),
    "uninstalled": ("uninstalled_at",),
    "terminated": ("uninstalled_at", "terminated_at"),
}


def clear_stamps_of_left_states(apps, schema_editor):
    installations = apps.get_model("installations", "Installation")._default_manager
    for status, kept in STAMPS_KEPT.items():
        installations.filter(status=status).update(**{name: None for name in STATE_STAMPS if name not in kept})


class Migration(migrations.Migration):
    dependencies = [
        ("installations", "0003_signature_key_grace_lifecycle"),
    ]

    operations = [migrations.RunPython(clear_stamps_of_left_states, migrations.RunPython.noop)]
