"""Credentials the database refuses: a configuration error, found before the run starts, never an outage.

A database that does not answer is an outage: the run goes on and its record waits in a journal
(:mod:`kd_plugin.tracking.resilient_observer`). A database that answers "authentication failed" will answer it
for the whole run; retrying would only hide the mistake until the end of a long run. So the observer's first
contact (:meth:`ResilientMongoObserver.check_access`, called in Sacred's config hook, before the run exists) and
its first write look for a refusal:

* ``OperationFailure`` code 18 ``AuthenticationFailed`` (wrong user name or password, wrong ``authSource``);
* ``OperationFailure`` code 13 ``Unauthorized`` (no credentials for a server that requires them, or a user
  without the right to read / write the run's database);
* ``ConfigurationError`` about authentication raised by pymongo while reading the URL (e.g. a user name
  without a password).

Each becomes a :class:`kd_plugin.errors.ConfigError` naming the key that gave the URL (``KD_MONGO_URL`` or
``tracking.mongo_url``) and the user name, never the password: one line, exit status 2, nothing recorded.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from pymongo.errors import ConfigurationError, OperationFailure

from kd_plugin.errors import ConfigError
from kd_plugin.tracking.credentials import mask_url

# MongoDB server error codes that mean "these credentials are refused here".
REFUSAL_CODES = {18: "AuthenticationFailed", 13: "Unauthorized"}
CHECK_TIMEOUT_S = 2.0  # the first-contact check; an unreachable server is left to the outage machinery
_AUTH_WORDS = re.compile(r"auth|password|user ?name|credential|mechanism", re.IGNORECASE)


def is_refusal(exc: BaseException) -> bool:
    """True if ``exc`` says the credentials (or their rights) are refused, as opposed to an outage."""
    if isinstance(exc, OperationFailure):
        return exc.code in REFUSAL_CODES
    if isinstance(exc, ConfigurationError):
        return bool(_AUTH_WORDS.search(str(exc)))
    return False


def user_name(url: str) -> str | None:
    """The user name of a MongoDB URL (``mongodb://alice:pw@host`` -> ``alice``), None if it has none."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return None
    if "@" not in netloc:
        return None
    user = netloc.rsplit("@", 1)[0].split(":", 1)[0]
    return unquote(user) or None


def _server_says(exc: BaseException) -> str:
    if isinstance(exc, OperationFailure):
        details = exc.details or {}
        name = details.get("codeName") or REFUSAL_CODES.get(exc.code, f"code {exc.code}")
        message = details.get("errmsg") or str(exc).split(", full error:")[0]
        return f"{name}: {mask_url(str(message))[:200]}"
    return f"{type(exc).__name__}: {mask_url(str(exc))[:200]}"


def refusal_error(key: str, url: str, db_name: str, exc: BaseException) -> ConfigError:
    """The one-line error for refused credentials. ``url`` may hold a password: only its masked form and the
    user name are used."""
    shown, user, said = mask_url(url), user_name(url), _server_says(exc)
    if isinstance(exc, ConfigurationError):
        problem = f"pymongo cannot use the credentials of {shown} ({said})"
        allowed = "mongodb://USER:PASSWORD@HOST:PORT (user name and password percent-encoded)"
    elif exc.code == 18:
        problem = f"{shown} refused the credentials of user {user!r} ({said})"
        allowed = ("a user name and password that this database accepts (add ?authSource=DB when the user is "
                   "defined in another database)")
    elif user is None:
        problem = f"{shown} requires authentication and the URL names no user ({said})"
        allowed = "mongodb://USER:PASSWORD@HOST:PORT"
    else:
        problem = f"{shown} does not let user {user!r} read and write database {db_name!r} ({said})"
        allowed = f"a user with the readWrite role on database {db_name!r}"
    return ConfigError(key, problem, allowed)
