"""The one error type users see for bad declarations: it names the key and what is allowed."""

import contextlib
import sys


class ConfigError(ValueError):
    """An invalid configuration value, raised before any compute starts.

    The message always has the form ``<key>: <problem>; allowed: <allowed values>`` so a user can fix the
    command line without reading code.
    """

    def __init__(self, key: str, problem: str, allowed: str | None = None):
        self.key = key
        self.problem = problem
        self.allowed = allowed
        message = f"{key}: {problem}"
        if allowed is not None:
            message += f"; allowed: {allowed}"
        super().__init__(message)



@contextlib.contextmanager
def exit_on_config_error():
    """Turn a ConfigError into one line on stderr and exit status 2.

    Sacred catches every ``Exception`` raised by a config hook or main function and prints a stack trace;
    ``SystemExit`` passes through, so a user sees ``configuration error: <key>: ...`` and nothing else.
    """
    try:
        yield
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
