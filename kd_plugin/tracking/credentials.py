"""Keep database passwords out of the console and out of run documents.

A MongoDB URL may carry ``user:password@``. Whatever is printed goes through :func:`mask_url`, and every run
document goes through :func:`redact` before it is written, so a password given on the command line (it is
recorded in ``meta.config_updates``) or in the config never reaches the database.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# scheme://user:password@  -- the password stops at the first '@', '/' or whitespace (URL syntax requires a
# literal '@' or '/' in a password to be percent-encoded, so this never eats the host part).
_CREDENTIALS = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s]+:)(?P<password>[^@/\s]+)@")


def has_credentials(text: str) -> bool:
    return bool(_CREDENTIALS.search(text))


def mask_url(text: str) -> str:
    """``mongodb://user:secret@host`` -> ``mongodb://user:***@host`` (also inside longer text)."""
    if "://" not in text:  # fast path: most strings in a run document are not URLs
        return text
    return _CREDENTIALS.sub(lambda m: f"{m.group('prefix')}{MASK}@", text)


def redact(value: Any) -> Any:
    """A copy of ``value`` (nested dicts / lists / tuples) with :func:`mask_url` applied to every string."""
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact(item) for item in value)
    return value
