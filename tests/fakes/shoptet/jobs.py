"""Asynchronous jobs (snapshots): lifecycle, result files, `job:finished`, and the Jobs endpoints."""

from __future__ import annotations

import gzip
import json
import secrets
import string
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import params, webhooks
from .messages import ApiError, Request, Response
from .state import COMPLETED, FAILED, RUNNING, UNFINISHED, FakeEshop, Job, ResultFile

if TYPE_CHECKING:
    from .fake import FakeShoptet

JOB_ID_ALPHABET = string.ascii_lowercase + string.digits


def _job_id() -> str:
    return "".join(secrets.choice(JOB_ID_ALPHABET) for _ in range(7))


def require_job_finished_webhook(eshop: FakeEshop) -> None:
    """Async endpoints refuse to queue anything without a `job:finished` webhook (spec, "Basic principles")."""
    if eshop.webhook_for("job:finished") is None:
        message = "Webhook job:finished must be registered to use asynchronous endpoints."
        raise ApiError(403, "missing-job-finished-webhook", message, "job:finished")


def start(
    fake: FakeShoptet, eshop: FakeEshop, endpoint: str, resource: str, build: Callable[[], list[dict[str, Any]]]
) -> Job:
    """Queue a job whose result lines `build()` produces when the job runs."""
    job = Job(_job_id(), eshop.eshop_id, endpoint, resource, fake.clock.now(), fail=eshop.fail_next_job, build=build)
    eshop.fail_next_job = False
    eshop.jobs[job.job_id] = job
    if not fake.never_finish_jobs:
        fake.schedule(fake.job_duration / 2, mark_running, eshop.eshop_id, job.job_id)
        fake.schedule(fake.job_duration, finish, eshop.eshop_id, job.job_id)
    return job


def mark_running(fake: FakeShoptet, eshop_id: int, job_id: str) -> None:
    with fake.state.lock:
        job = _find(fake, eshop_id, job_id)
        if job is not None and job.status in UNFINISHED:
            job.status = RUNNING


def finish(fake: FakeShoptet, eshop_id: int, job_id: str, *, failed: bool = False) -> None:
    """Complete (or fail) the job, store its result file and send `job:finished` (sent on failure too)."""
    with fake.state.lock:
        job = _find(fake, eshop_id, job_id)
        if job is None or job.status not in UNFINISHED:
            return
        eshop = fake.state.eshops[eshop_id]
        completed = job.completed = fake.clock.now()
        if failed or job.fail:
            job.status = FAILED
            job.log = "Job processing failed: simulated error."
        else:
            _store_result(fake, eshop, job, completed, job.build() if job.build else [])
            job.status = COMPLETED
        send_webhook = not fake.suppress_job_webhook
    if send_webhook:
        webhooks.deliver_if_registered(fake, eshop_id, "job:finished", job_id)


def _store_result(
    fake: FakeShoptet, eshop: FakeEshop, job: Job, completed: datetime, lines: list[dict[str, Any]]
) -> None:
    """GZIP-compressed JSON Lines despite the `.json` suffix, like Shoptet's result files."""
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    name = f"{job.job_id}-{_job_id()}.json"
    valid_until = completed + timedelta(seconds=fake.result_validity)
    eshop.results[name] = ResultFile(gzip.compress(text.encode("utf-8")), valid_until.timestamp())
    job.result_url = f"{eshop.url}api-results/{name}"
    job.valid_until = valid_until


def _find(fake: FakeShoptet, eshop_id: int, job_id: str) -> Job | None:
    eshop = fake.state.eshops.get(eshop_id)
    return eshop.jobs.get(job_id) if eshop else None


# -- endpoints ----------------------------------------------------------------------------------------------
def list_jobs(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    query = request.query
    status = query.get("status")
    bounds = {name: params.moment(query, name) for name in _TIME_FILTERS}
    with fake.state.lock:
        jobs = sorted(eshop.jobs.values(), key=lambda job: job.created, reverse=True)
        jobs = [job for job in jobs if (status is None or job.status == status) and _within(job, bounds)]
        page, paginator = params.paginate([job.to_list_item() for job in jobs], query, default=100, maximum=500)
    return 200, {"jobs": page, "paginator": paginator}


_TIME_FILTERS = ("creationTimeFrom", "creationTimeTo", "completionTimeFrom", "completionTimeTo")


def _within(job: Job, bounds: dict[str, Any]) -> bool:
    checks = [
        (bounds["creationTimeFrom"], job.created, True),
        (bounds["creationTimeTo"], job.created, False),
        (bounds["completionTimeFrom"], job.completed, True),
        (bounds["completionTimeTo"], job.completed, False),
    ]
    for bound, value, lower in checks:
        if bound is None:
            continue
        if value is None or (value < bound if lower else value > bound):
            return False
    return True


def get_job(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    job_id = request.params["jobId"]
    with fake.state.lock:
        job = eshop.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "job-not-found", f'Job with ID "{job_id}" not found.', job_id)
        if job.status in UNFINISHED:
            # Polling is discouraged: the 11th detail request of an unprocessed job is refused (spec).
            job.detail_tries += 1
            if job.detail_tries > fake.job_detail_limit:
                message = (
                    f'You have exceeded the limit of job detail request for unprocessed job "{job_id}". '
                    "Please wait for job:finished event after job is completed!"
                )
                raise ApiError(403, "job-detail-try-counter-exceeded-limit", message, job_id)
        return 200, {"job": job.to_api()}


def download_result(fake: FakeShoptet, request: Request) -> Response:
    """The result file lives on the e-shop's domain and needs no authentication (treat its URL as a secret)."""
    eshop_id = int(request.params["eshopId"])
    with fake.state.lock:
        eshop = fake.state.eshops.get(eshop_id)
        result = eshop.results.get(request.params["name"]) if eshop else None
        if result is None or result.valid_until <= fake.clock.time():
            return Response.text(404, "<h1>404 Not Found</h1>")
        request.eshop_id = eshop_id
        return Response(200, result.content, {"Content-Type": "application/octet-stream"})
