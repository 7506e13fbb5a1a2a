"""Stopping a run cleanly on SIGTERM, SIGHUP or SIGINT: finish the optimizer step, checkpoint, mark it INTERRUPTED.

Schedulers (``timeout``, Slurm, Kubernetes, ``docker stop``) send SIGTERM, a terminal sends SIGINT (Ctrl-C), and
SIGHUP when it closes (an ssh session dropped, a terminal window closed). While the loop runs, the first such
signal only sets a flag; the loop ends after the current optimizer step (all ranks agree on the same step), the
trainer writes a checkpoint and raises :class:`TrainingInterrupted`, which Sacred records as status INTERRUPTED,
and the experiment prints one line with the command that resumes the run and exits with the conventional status
``128 + signal number`` (129 for SIGHUP, 130 for SIGINT, 143 for SIGTERM). A second signal while the checkpoint
is being written interrupts at once.

Outside the loop (loading models, tokenizing) there is nothing to checkpoint: SIGTERM and SIGHUP, like SIGINT,
raise at once (:class:`Terminated`), so the run is still recorded as INTERRUPTED instead of being killed silently.
Both exceptions derive from ``KeyboardInterrupt``: Sacred records them with their ``STATUS`` and lets them
through (it prints a stack trace for ordinary exceptions), and :func:`clean_exit` turns them into one line.

SIGHUP from a terminal that closed leaves stdout/stderr pointing at a hung-up terminal, where every write fails
(EIO) and would crash the run on its way to the checkpoint: such streams are sent to ``/dev/null`` first (the
run's record keeps its captured output). A process started with ``nohup`` ignores SIGHUP, and keeps doing so.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import torch
import torch.distributed as dist

from kd_plugin.training.distributed import is_distributed

HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
TERMINATING = (signal.SIGTERM, signal.SIGHUP)  # raise Terminated outside the loop (SIGINT: KeyboardInterrupt)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside the training loop (nothing to checkpoint yet)."""

    STATUS = "INTERRUPTED"

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after the interrupted run's checkpoint is written; Sacred stores STATUS as the run's status."""

    STATUS = "INTERRUPTED"

    def __init__(self, signum: int, step: int, total_steps: int, checkpoint_dir: str, output_dir: str):
        super().__init__(f"{signal.Signals(signum).name} at step {step} of {total_steps}")
        self.signum = signum
        self.step = step
        self.total_steps = total_steps
        self.checkpoint_dir = checkpoint_dir
        self.output_dir = output_dir


def _ignored(signum: int) -> bool:
    """True for SIGHUP under ``nohup`` (inherited SIG_IGN): the user asked to survive the terminal's end."""
    return signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN


def _leave_hung_up_terminal() -> None:
    """Point stdout/stderr at /dev/null if they are a terminal that hung up (every write there fails with EIO,
    ``isatty`` included); a terminal still open (``kill -HUP`` from elsewhere) keeps showing the run."""
    for fd in (1, 2):
        if fd in _TERMINAL_FDS and not _isatty(fd):  # was a terminal, answers no more: hung up
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)


_TERMINAL_FDS: set[int] = set()  # stdout/stderr fds that were a terminal when the handlers were installed


def _note_terminal_fds() -> None:
    _TERMINAL_FDS.update(fd for fd in (1, 2) if _isatty(fd))


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGHUP:
        _leave_hung_up_terminal()
    raise Terminated(signum)


def install_process_handlers() -> None:
    """SIGTERM and SIGHUP raise :class:`Terminated` (the default would end the process without recording
    anything); a SIGHUP ignored by ``nohup`` stays ignored."""
    if threading.current_thread() is threading.main_thread():
        _note_terminal_fds()
        for sig in TERMINATING:
            if not _ignored(sig):
                signal.signal(sig, _raise_terminated)


def resume_command(argv: list[str], checkpoint_dir: str, output_dir: str) -> str:
    """``argv`` with ``resume=`` and ``output_dir=`` set to the interrupted run's, as a shell line."""
    args = [a for a in argv[1:] if not a.startswith(("resume=", "output_dir="))]
    if "with" not in args:
        args.append("with")
    args += [f"resume={checkpoint_dir}", f"output_dir={output_dir}"]
    return " ".join(shlex.quote(part) for part in ["python", argv[0], *args])


@contextlib.contextmanager
def clean_exit(argv: list[str] | None = None, resumable: bool = True) -> Iterator[None]:
    """One line instead of a traceback for an interrupted run, and the conventional exit status.
    ``resumable``: the experiment has ``resume=`` (distill); else the line says to run it again."""
    try:
        yield
    except TrainingInterrupted as stop:
        _say(f"interrupted by {signal.Signals(stop.signum).name} at step {stop.step} of {stop.total_steps}; "
             f"checkpoint in {stop.checkpoint_dir}; resume with: "
             f"{resume_command(argv or sys.argv, stop.checkpoint_dir, stop.output_dir)}")
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        if resumable:
            _say(f"interrupted by {signal.Signals(signum).name} outside the training loop (or by a second signal): "
                 "stopped at once; a checkpoint already written, if any, resumes with resume=<output_dir>")
        else:
            _say(f"interrupted by {signal.Signals(signum).name}: stopped at once; nothing to resume: run it again")
        sys.exit(128 + signum)


def _say(line: str) -> None:
    """The last line of the run; a terminal that is gone (EIO) must not turn the exit status into a traceback."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr, flush=True)


class StopRequest:
    """Installs the handlers for the loop's duration; ``signum`` is set by the first SIGTERM/SIGHUP/SIGINT."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._group = None  # the process group the ranks agree in (a CPU one under NCCL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            _leave_hung_up_terminal()  # the progress bar and the logs must not crash the step and the checkpoint
        if self.signum is not None:  # a second signal: stop now (exit status 128 + this signal)
            self.restore()
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)
        self.signum = signum

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            _note_terminal_fds()
            for sig in HANDLED:
                if not _ignored(sig):
                    self._previous[sig] = signal.signal(sig, self._handle)
        if is_distributed() and dist.get_backend() == "nccl":
            # Every step asks the ranks: on a CUDA tensor that would wait for the device each step, so the
            # question goes through a gloo group on the host (collective: every rank creates it here).
            self._group = dist.new_group(backend="gloo")
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self) -> int | None:
        """The signal any rank received (the same answer on every rank; one small all-reduce when distributed)."""
        if is_distributed():
            flag = torch.tensor([self.signum or 0], dtype=torch.int64)  # on the host: no device synchronisation
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
            return int(flag.item()) or None
        return self.signum

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
