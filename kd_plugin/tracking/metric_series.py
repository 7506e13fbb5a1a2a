"""One metric's points as Sacred stores them (``metrics`` collection), with a fixed maximum number of points.

Sacred keeps every series in ONE document ``{run_id, name, steps: [...], values: [...], timestamps: [...]}``
and appends to it at each heartbeat, so a long run that logs often can reach MongoDB's 16 MB document limit.
The trainer throttles logging (``log_every``); this class is the backstop: a series never holds more than
``max_points`` points. When it is full, every other stored point is dropped and from then on only every
2nd (later 4th, 8th, ...) logged point is kept, so the series still spans the whole run, evenly thinned.
:meth:`finish` adds the last logged point at the end of a run, so the final value is always stored.

The class also remembers how much of it the database already holds (``written``), so that normal updates
append only new points (``$push``) and the whole series is rewritten (``$set``) only when needed: after it
was thinned, or after a write that failed half-way (it may or may not have been applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

DEFAULT_MAX_POINTS = 10_000  # about 0.5 MB of BSON per series


@dataclass
class MetricWrite:
    """The update that brings the stored series up to date: ``full`` = replace the arrays, else append."""

    full: bool
    steps: list
    values: list
    timestamps: list


class MetricSeries:
    def __init__(self, name: str, doc_id: ObjectId | None = None, max_points: int = DEFAULT_MAX_POINTS):
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        self.name = name
        self.doc_id = doc_id or ObjectId()  # chosen here, so a retried upsert can never create a second document
        self.max_points = max_points
        self.steps: list[Any] = []
        self.values: list[Any] = []
        self.timestamps: list[datetime] = []
        self._indices: list[int] = []  # running number (0, 1, 2, ...) of each stored point among logged points
        self.logged = 0  # points received, stored or not
        self.stride = 1  # a logged point is kept if its running number is a multiple of this
        self._latest: tuple[int, Any, Any, datetime] | None = None
        self.written = 0  # leading points the database holds (meaningful unless needs_full_write)
        self.needs_full_write = False

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def thinned(self) -> bool:
        return self.stride > 1

    def append(self, step: Any, value: Any, timestamp: datetime) -> None:
        index = self.logged
        self.logged += 1
        self._latest = (index, step, value, timestamp)
        if index % self.stride:
            return
        self._store(index, step, value, timestamp)
        if len(self.steps) > self.max_points:
            self._thin()

    def extend(self, steps: list, values: list, timestamps: list) -> None:
        for step, value, timestamp in zip(steps, values, timestamps, strict=True):
            self.append(step, value, timestamp)

    def finish(self) -> None:
        """Store the last logged point if thinning skipped it (the final value of a run matters most)."""
        if self._latest is not None and (not self._indices or self._indices[-1] != self._latest[0]):
            self._store(*self._latest)

    def _store(self, index: int, step: Any, value: Any, timestamp: datetime) -> None:
        self._indices.append(index)
        self.steps.append(step)
        self.values.append(value)
        self.timestamps.append(timestamp)

    def _thin(self) -> None:
        self.stride *= 2
        keep = [i for i, index in enumerate(self._indices) if index % self.stride == 0]
        self._indices = [self._indices[i] for i in keep]
        self.steps = [self.steps[i] for i in keep]
        self.values = [self.values[i] for i in keep]
        self.timestamps = [self.timestamps[i] for i in keep]
        self.needs_full_write = True  # stored points were removed: appending cannot express that

    # ------------------------------------------------------------------------------------ database sync
    def pending_write(self) -> MetricWrite | None:
        """What the database is missing, or None if it is up to date."""
        if self.needs_full_write:
            return MetricWrite(True, list(self.steps), list(self.values), list(self.timestamps))
        if self.written < len(self.steps):
            start = self.written
            return MetricWrite(False, self.steps[start:], self.values[start:], self.timestamps[start:])
        return None

    def mark_written(self) -> None:
        self.written = len(self.steps)
        self.needs_full_write = False

    def mark_uncertain(self) -> None:
        """A write failed after it may have reached the server: rewrite the whole series next time."""
        self.needs_full_write = True

    def summary(self) -> dict[str, int]:
        return {"logged": self.logged, "stored": len(self.steps), "kept_every": self.stride}

    # ------------------------------------------------------------------------------------- journal state
    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "doc_id": self.doc_id,
            "max_points": self.max_points,
            "steps": self.steps,
            "values": self.values,
            "timestamps": self.timestamps,
            "indices": self._indices,
            "logged": self.logged,
            "stride": self.stride,
            "latest": list(self._latest) if self._latest is not None else None,
            "written": self.written,
            "needs_full_write": self.needs_full_write,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MetricSeries:
        series = cls(state["name"], state["doc_id"], state["max_points"])
        series.steps, series.values = list(state["steps"]), list(state["values"])
        series.timestamps, series._indices = list(state["timestamps"]), list(state["indices"])
        series.logged, series.stride = state["logged"], state["stride"]
        series._latest = tuple(state["latest"]) if state["latest"] is not None else None
        series.written, series.needs_full_write = state["written"], state["needs_full_write"]
        return series
