"""A one-line progress bar with rate and ETA, drawn on stderr only when stderr is a terminal.

Workers only bump integer counters on :class:`Meter` objects (no locking needed under the GIL);
the main thread calls :meth:`ProgressBar.draw` a few times a second.  In a pipe or a file the bar
is disabled entirely, so logs and JSON consumers never see carriage returns.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO


class Meter:
    """Progress of one transfer.

    ``done``/``total`` place the current item (a file may restart them at 0 for the next one);
    ``moved`` only ever grows and is what the rate is computed from.  ``deadline`` is the
    time.monotonic() at which a timed (--mem) transfer stops.

    A sender's meter counts what the receiver acknowledged, not what the send buffer took: the
    worker sets ``queued`` (bytes handed to the socket) and ``unacked`` (a callable returning the
    bytes still in the send buffer, which holds every byte until its ACK), and :meth:`refresh`
    turns the two into ``done``/``moved``.
    """

    __slots__ = ("label", "done", "total", "moved", "deadline", "queued", "unacked")

    def __init__(
        self,
        label: str,
        total: int | None = None,
        deadline: float | None = None,
        unacked: Callable[[], int] | None = None,
    ) -> None:
        self.label = label
        self.done = 0
        self.total = total
        self.moved = 0
        self.deadline = deadline
        self.queued = 0
        self.unacked = unacked

    def refresh(self) -> None:
        """Acknowledged bytes into done/moved (never backwards); a closed socket keeps the last."""
        if self.unacked is None:
            return
        try:
            acked = self.queued - self.unacked()
        except OSError:
            return
        self.done = self.moved = max(self.moved, acked)


class ProgressBar:
    """Draws the sum of all registered meters: percentage, bar, bytes, rate, ETA."""

    RATE_WINDOW = 2.0  # seconds of history behind the displayed rate

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self._meters: list[Meter] = []
        self._lock = threading.Lock()
        self._history: deque[tuple[float, int]] = deque()
        self._finished_bytes = 0  # bytes of meters already removed, so the rate stays continuous
        self._drawn = False

    def add(self, meter: Meter) -> Meter:
        with self._lock:
            self._meters.append(meter)
        return meter

    def remove(self, meter: Meter) -> None:
        with self._lock:
            if meter in self._meters:
                meter.refresh()
                self._meters.remove(meter)
                self._finished_bytes += meter.moved

    def moved(self) -> int:
        """Bytes moved by every meter so far (finished ones included), refreshed now."""
        with self._lock:
            meters = list(self._meters)
            finished = self._finished_bytes
        for meter in meters:
            meter.refresh()
        return finished + sum(m.moved for m in meters)

    def draw(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            meters = list(self._meters)
            finished = self._finished_bytes
        for meter in meters:
            meter.refresh()
        done = sum(m.done for m in meters)
        moved = finished + sum(m.moved for m in meters)
        self._history.append((now, moved))
        while len(self._history) > 2 and now - self._history[0][0] > self.RATE_WINDOW:
            self._history.popleft()
        t0, b0 = self._history[0]
        rate = max(moved - b0, 0) / (now - t0) if now > t0 else 0.0
        if not meters:
            self.clear()
            return
        line = self._format(meters, done, rate, now)
        import shutil  # here, not at the top: only a terminal draws, and shutil costs ~4 ms of start-up

        width = shutil.get_terminal_size((80, 24)).columns
        self.stream.write("\r" + line[: max(width - 1, 10)] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _format(self, meters: list[Meter], done: int, rate: float, now: float) -> str:
        label = meters[0].label if len(meters) == 1 else f"{len(meters)} transfers"
        totals = [m.total for m in meters if m.total is not None]
        known_total = sum(totals) if len(totals) == len(meters) else None
        rate_text = f"{rate * 8 / 1e6:8.1f} Mbit/s"
        if known_total:
            fraction = min(done / known_total, 1.0)
            bar_width = 20
            filled = int(fraction * bar_width)
            bar = "#" * filled + "-" * (bar_width - filled)
            eta = (known_total - done) / rate if rate > 0 else None
            return (
                f"{label} {fraction * 100:5.1f}% [{bar}] {_size(done)}/{_size(known_total)} "
                f"{rate_text} ETA {_duration(eta)}"
            )
        deadlines = [m.deadline for m in meters if m.deadline is not None]
        eta = max(deadlines) - now if deadlines else None
        return f"{label} {_size(done)} {rate_text}" + (f" ETA {_duration(eta)}" if deadlines else "")

    def clear(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.2f}TiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
