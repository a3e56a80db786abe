"""A worker process that imports one snapshot job, for the test that kills it halfway."""

from __future__ import annotations

import os
import sys

import django


def main(job_id: int) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from sync import snapshots
    from sync.models import SyncJob

    job = snapshots.import_snapshot(job=SyncJob.objects.get(pk=job_id))
    print(f"job {job.pk} {job.status} {job.error}", file=sys.stderr)
    return 0 if job.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
