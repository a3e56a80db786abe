"""The one retry policy: exponential backoff with a cap and jitter, used by every task, the client and the relays."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Backoff:
    """Wait `base` before the first retry, twice as long before each next one, never longer than `cap`.

    `jitter` is the share of each wait drawn at random (1: anywhere from zero, 0.5: from half, 0: exact),
    so that workers that failed together do not all come back in the same second.
    """

    base: float
    cap: float
    jitter: float = 0.5

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number `retry` (0 for the first)."""
        return min(self.cap, self.base * 2.0 ** max(retry, 0))

    def seconds(self, retry: int) -> float:
        ceiling = self.ceiling(retry)
        if not self.jitter:
            return ceiling
        return random.uniform(ceiling * (1 - self.jitter), ceiling)  # noqa: S311 - jitter, not a secret

    def delay(self, retry: int) -> timedelta:
        return timedelta(seconds=self.seconds(retry))


# A task that met a transient error (a Shoptet outage, a timeout) runs again after up to 5 s, 10 s, 20 s …
# at most 10 minutes: full jitter, since a whole fleet of e-shops may have failed in the same second.
TASK_RETRY = Backoff(base=5.0, cap=600.0, jitter=1.0)
