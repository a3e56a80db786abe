"""A one-line progress bar for the sync commands: drawn on a terminal, silent in logs and cron mails."""

from __future__ import annotations

import time

from django.core.management.base import OutputWrapper

WIDTH = 30
REDRAW_SECONDS = 0.1


class ProgressBar:
    def __init__(self, out: OutputWrapper, label: str) -> None:
        self.out = out
        self.label = label
        self.enabled = out.isatty()
        self._drawn = 0.0
        self._width = 0
        self._pending: str | None = None

    def documents(self, count: int, done_bytes: int = 0, total_bytes: int | None = None) -> None:
        """Documents read so far; with the file's size known, a bar of the bytes read."""
        if total_bytes:
            fraction = min(done_bytes / total_bytes, 1.0)
            filled = int(fraction * WIDTH)
            bar = "█" * filled + "·" * (WIDTH - filled)
            text = f"{bar} {fraction:4.0%}  {count:,} documents  {done_bytes / 1e6:.1f}/{total_bytes / 1e6:.1f} MB"
        else:
            text = f"{count:,} documents"
        self._draw(text, final=False)

    def status(self, text: str) -> None:
        self._draw(text, final=True)

    def finish(self) -> None:
        """Draw what a redraw limit held back, and end the line."""
        if self._pending is not None:
            self._draw(self._pending, final=True)
        if self.enabled and self._width:
            self.out.write("", ending="\n")
            self._width = 0

    def _draw(self, text: str, *, final: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._drawn < REDRAW_SECONDS:
            self._pending = text
            return
        self._drawn = now
        self._pending = None
        line = f"{self.label}: {text}"
        self.out.write("\r" + line.ljust(self._width), ending="")
        self.out.flush()
        self._width = len(line)
