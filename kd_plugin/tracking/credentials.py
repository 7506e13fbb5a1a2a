"""Keep database passwords out of the console and out of run documents.

A MongoDB URL may carry ``user:password@``. Whatever is printed goes through :func:`mask_url`, and every run
document goes through :func:`redact` before it is written, so a password given on the command line (it is
recorded in ``meta.config_updates``) or in the config never reaches the database.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# scheme://user:password@host -- the user ends at the first ':', the password at the LAST '@' of the URL (it runs
# to the next whitespace). URL syntax wants '@', ':' and '/' in a password percent-encoded, but people paste
# them raw: `mongodb://u:p@ss@host` must show `u:***@host`, not `u:***@ss@host`. Masking too much (a rare '@' in
# the query string) is harmless; masking too little prints a secret.
_CREDENTIALS = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*://[^:\s]*:)(?P<password>\S*)@")
# A URL without a scheme (``user:pw@host:27017``): everything before its last '@' may be secret.
_SCHEMELESS_USERINFO = re.compile(r"^\S*@")


def has_credentials(text: str) -> bool:
    return bool(_CREDENTIALS.search(text))


def mask_url(text: str) -> str:
    """``mongodb://user:secret@host`` -> ``mongodb://user:***@host`` (also inside longer text, and when the
    password holds a raw ``@``, ``:`` or ``/``)."""
    if "://" not in text:  # fast path: most strings in a run document are not URLs
        return text
    return _CREDENTIALS.sub(lambda m: f"{m.group('prefix')}{MASK}@", text)


def shown_url(url: str) -> str:
    """``url`` as it may be printed in a message about it: :func:`mask_url`, and for a value without a scheme
    (not a URL at all, e.g. ``user:pw@host:27017``) everything up to its last ``@`` hidden too."""
    if "://" in url:
        return mask_url(url)
    return _SCHEMELESS_USERINFO.sub(f"{MASK}@", url.strip())


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
