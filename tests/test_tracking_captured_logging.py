"""Logging lines reach a run's captured output: the handler writes to whatever sys.stderr is at each line (Sacred
swaps it for a tee during a run), and the root logger's own INFO chatter stays out."""

from __future__ import annotations

import io
import logging
import sys

from kd_plugin.tracking.captured_logging import CurrentStderrHandler, run_logger


def test_lines_follow_sys_stderr_as_it_is_when_they_are_logged(monkeypatch):
    logger = logging.getLogger("kd_plugin.test_captured")
    logger.setLevel(logging.INFO)
    handler = CurrentStderrHandler()  # made before the "run", as Sacred's handler is
    logger.addHandler(handler)
    logger.propagate = False
    try:
        tee = io.StringIO()
        monkeypatch.setattr(sys, "stderr", tee)  # what Sacred's capture does while a run runs
        logger.info("corpus tokenized")
        assert tee.getvalue() == "INFO - kd_plugin.test_captured - corpus tokenized\n"
        after = io.StringIO()
        monkeypatch.setattr(sys, "stderr", after)
        logger.warning("later")
        assert after.getvalue() == "WARNING - kd_plugin.test_captured - later\n" and "later" not in tee.getvalue()
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_root_info_chatter_is_dropped_and_one_handler_replaces_the_default(monkeypatch):
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        root.handlers = [logging.StreamHandler(sys.stderr)]  # what logging.basicConfig / Sacred's default add
        assert run_logger() is root and root.level == logging.INFO
        assert [type(h) for h in root.handlers] == [CurrentStderrHandler]
        run_logger()  # twice: still one
        assert sum(isinstance(h, CurrentStderrHandler) for h in root.handlers) == 1
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        logging.info("gcc -c test.c")  # a library's INFO on the root logger itself
        logging.warning("a root warning")
        logging.getLogger("kd_plugin.x").info("kept")
        assert stream.getvalue() == "WARNING - root - a root warning\nINFO - kd_plugin.x - kept\n"
    finally:
        root.handlers, root.level = saved_handlers, saved_level
