"""The one error type users see for bad declarations: it names the key and what is allowed."""


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
