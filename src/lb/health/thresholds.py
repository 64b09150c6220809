"""Active-check thresholds for one backend: a pure state machine over check results and a clock.

No I/O and no timers: the checker feeds it one result at a time with the time it finished, and acts
on the transitions it returns. That keeps the rules (SPEC 5) testable over a fake clock.
"""

from __future__ import annotations


class CheckState:
    """Health by active checks: turns unhealthy after `unhealthy_threshold` failed checks in a row,
    healthy after `healthy_threshold` good ones in a row. Starts in the state it is given."""

    __slots__ = ("healthy", "successes", "failures", "changed_at", "_rise", "_fall")

    def __init__(
        self,
        healthy_threshold: int,
        unhealthy_threshold: int,
        *,
        healthy: bool = True,
        now: float = 0.0,
    ) -> None:
        self._rise = healthy_threshold
        self._fall = unhealthy_threshold
        self.healthy = healthy
        self.successes = 0  # good checks in a row while unhealthy
        self.failures = 0  # failed checks in a row while healthy
        self.changed_at = now

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else "unhealthy"
        return (
            f"<CheckState {state} [ok {self.successes}/{self._rise}, "
            f"failed {self.failures}/{self._fall}]>"
        )

    def observe(self, ok: bool, now: float) -> bool | None:
        """Record one check that finished at `now`; the new health if it flips, else None."""
        if ok:
            self.failures = 0
            if self.healthy:
                return None
            self.successes += 1
            if self.successes < self._rise:
                return None
        else:
            self.successes = 0
            if not self.healthy:
                return None
            self.failures += 1
            if self.failures < self._fall:
                return None
        self.healthy = ok
        self.successes = self.failures = 0
        self.changed_at = now
        return ok

    def since(self, now: float) -> float:
        """Seconds in the current state."""
        return now - self.changed_at


def check_delay(interval: float, jitter: float, spread: float) -> float:
    """The wait before the next check: `interval` ± `jitter` × `interval`.

    `spread` is a random number in [0, 1) from the caller, so this stays deterministic in tests.
    Jitter keeps the checks of many backends and many workers from hitting in lockstep.
    """
    return max(0.0, interval * (1.0 + jitter * (2.0 * spread - 1.0)))
