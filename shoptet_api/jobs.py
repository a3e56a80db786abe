"""Shoptet's asynchronous jobs: snapshot and job endpoints, `/changes` paging, the result file as a stream of lines.

A result file is GZIP-compressed JSON Lines (despite its `.json` name) on the e-shop's domain, fetched
without authentication; its URL is a secret. It is read as a stream and never held in memory.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from typing import IO, Any, cast

import requests
import urllib3
from django.conf import settings
from django.utils import timezone

from shoptet_api.client import ShoptetClient, segment, shoptet_time
from shoptet_api.errors import ServerError, TransportError

# Shoptet's job statuses (spec, job list filter); pending and running mean "not processed yet".
UNFINISHED_JOB_STATUSES = frozenset({"pending", "running"})
GZIP_MAGIC = b"\x1f\x8b"
CHUNK_SIZE = 256 * 1024


class ResultFileError(Exception):
    """The result file is not a complete GZIP JSON Lines file: empty, truncated, corrupt or something else."""


class ResultGone(Exception):
    """The result file is no longer there (expired): only a new job can produce it again."""


def creation_filters(since: date | None, until: datetime | None) -> dict[str, str]:
    """The snapshot filters for documents created from the day `since` (None: any) until `until` (None: now)."""
    params = {}
    if since is not None:
        params["creationTimeFrom"] = shoptet_time(timezone.make_aware(datetime.combine(since, time.min)))
    if until is not None:
        params["creationTimeTo"] = shoptet_time(until)
    return params


def request_snapshot(client: ShoptetClient, resource: str, params: dict[str, str]) -> str:
    """Ask Shoptet for a snapshot job; returns its job id."""
    # Reference: getListOfAllOrders (GET /api/orders/snapshot), getListOfAllInvoices (GET /api/invoices/snapshot)
    data = client.request("GET", f"/api/{resource}/snapshot", params=params or None) or {}
    job_id = data.get("jobId")
    if not isinstance(job_id, str) or not job_id:
        raise TransportError(f"GET /api/{resource}/snapshot answered without a jobId")
    return job_id


def get_job(client: ShoptetClient, job_id: str) -> dict[str, Any]:
    # Reference: getJobDetail (GET /api/system/jobs/{jobId}); more than 10 calls on an unfinished job → 403
    job = (client.request("GET", f"/api/system/jobs/{segment(job_id)}") or {}).get("job")
    if not isinstance(job, dict) or not job.get("status"):
        raise TransportError("GET /api/system/jobs/{jobId} answered without a job status")
    return job


def changes(client: ShoptetClient, resource: str, since: datetime, *, per_page: int) -> Iterator[dict[str, Any]]:
    """Every change since `since`, page by page; only the last change of each document, 30 days back at most."""
    # Reference: getLastOrderChanges (GET /api/orders/changes), getLastInvoiceChanges (GET /api/invoices/changes)
    yield from client.paginate(
        f"/api/{resource}/changes", key="changes", params={"from": shoptet_time(since)}, items_per_page=per_page
    )


class _CountingReader:
    """Counts the compressed bytes read (progress) and keeps the first ones (to describe a file that is not gzip)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0
        self.head = b""

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        if len(self.head) < 64:
            self.head += chunk[: 64 - len(self.head)]
        self.count += len(chunk)
        return chunk

    def readable(self) -> bool:
        return True


class ResultLines:
    """The lines of a gzip JSON Lines stream; raises ResultFileError unless the stream ends cleanly."""

    def __init__(self, raw: IO[bytes], *, total_bytes: int | None = None) -> None:
        self._reader = _CountingReader(raw)
        self.total_bytes = total_bytes
        self.decompressed_bytes = 0

    @property
    def compressed_bytes(self) -> int:
        return self._reader.count

    def __iter__(self) -> Iterator[bytes]:
        archive = gzip.GzipFile(fileobj=cast("IO[bytes]", self._reader), mode="rb")
        try:
            for line in archive:
                self.decompressed_bytes += len(line)
                yield line
        except EOFError as error:
            raise ResultFileError(f"the result file is truncated ({error})") from error
        except (gzip.BadGzipFile, zlib.error, OSError) as error:
            if not self._reader.head.startswith(GZIP_MAGIC):
                raise ResultFileError(f"the result file is not gzip; it starts with {self._describe_head()}") from error
            raise ResultFileError(f"the result file is corrupt ({error})") from error
        if self._reader.count == 0:
            raise ResultFileError("the result file is empty (0 bytes)")

    def _describe_head(self) -> str:
        head = self._reader.head
        if len(head) < 40:
            head += self._reader.raw.read(40 - len(head))
        return repr(head[:40].decode("utf-8", "replace"))


@contextmanager
def open_result(url: str, *, session: requests.Session | None = None) -> Iterator[ResultLines]:
    """Stream the result file at `url` (used as given); 404/410 mean it expired."""
    get = session.get if session is not None else requests.get
    try:
        response = get(url, stream=True, timeout=settings.SHOPTET_API_TIMEOUT)
    except requests.RequestException as error:
        raise TransportError(f"result file download failed: {type(error).__name__}") from error
    with response:
        if response.status_code in (404, 410):
            raise ResultGone(f"the result file is gone (HTTP {response.status_code})")
        if response.status_code >= 500:
            raise ServerError(
                f"result file download answered HTTP {response.status_code}", http_status=response.status_code
            )
        if response.status_code != 200:
            raise ResultFileError(f"the result file download answered HTTP {response.status_code}")
        # The file's own bytes: its gzip is the format, not a transfer encoding to undo.
        response.raw.decode_content = False
        length = response.headers.get("Content-Length")
        raw = cast("IO[bytes]", _RawStream(response))
        lines = ResultLines(raw, total_bytes=int(length) if length and length.isdigit() else None)
        yield lines


class _RawStream:
    """The response body as a file whose network failures are transport errors (a retry may succeed)."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response

    def read(self, size: int = -1) -> bytes:
        # Never the whole body at once, even when asked for "all": the file may be gigabytes.
        try:
            data: bytes = self.response.raw.read(CHUNK_SIZE if size is None or size < 0 else size)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            raise TransportError(f"result file download broke off: {type(error).__name__}") from error
        return data
