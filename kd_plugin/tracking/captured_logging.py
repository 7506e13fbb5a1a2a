"""Logging lines in a run's captured output, as well as on the console.

Sacred captures a run's output by swapping ``sys.stdout``/``sys.stderr`` for tees while it runs
(``CAPTURE_MODE = "sys"``), but the stream handler it installs on the root logger keeps the ``sys.stderr`` of
the moment it was made, before the run: every ``logging`` line (the corpus statistics, the held-out scores, the
plain progress lines) reached the console but never the record. This handler looks ``sys.stderr`` up at each
line instead, so during a run its lines go through Sacred's tee into the captured output.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(levelname)s - %(name)s - %(message)s"  # Sacred's own format


class CurrentStderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))
        self.addFilter(_not_root_chatter)

    @property
    def stream(self):  # noqa: D102  (logging.StreamHandler's attribute, resolved per record)
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it: the current stderr is used instead
        pass


def _not_root_chatter(record: logging.LogRecord) -> bool:
    """Drop INFO lines logged on the root logger itself: libraries' probes (DeepSpeed logs each gcc command of
    its op-builder checks there); named loggers (kd_plugin's, Sacred's) and warnings pass."""
    return record.name != "root" or record.levelno >= logging.WARNING


def run_logger() -> logging.Logger:
    """The root logger at INFO with one :class:`CurrentStderrHandler` (for ``Experiment.logger``). Handlers a
    user configured on the root logger are kept; a stream handler on the original stderr (what Sacred's default
    or ``logging.basicConfig`` adds) is replaced, so no line is shown twice."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    kept = [h for h in root.handlers
            if not (type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.__stderr__))
            and not isinstance(h, CurrentStderrHandler)]
    root.handlers = [*kept, CurrentStderrHandler()]
    return root
