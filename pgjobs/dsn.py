"""DSNs in messages: checked, described and scrubbed so that no part of a password shows.

A password reaches text in three ways: the DSN echoed, the DSN described, and libpq's own
errors, which quote the host, port or database it parsed. A URL whose password holds `@`
or `/` unescaped (`postgresql://app:p@ss/w0rd@db/app`) is split by libpq into a short
password, a host and a database that are all pieces of the real password; libpq would then
look up that "host" in DNS and send it the other piece. `check` refuses such URLs before
any connection, naming no part of them, and every message goes through `scrub`.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

HIDDEN = "<dsn hidden>"
_URL_SCHEME = re.compile(r"\s*postgres(?:ql)?://", re.IGNORECASE)
# Without the DSN at hand (log lines): a URL's password runs from the first ':' of its
# user info to the last '@' of the word, since an unescaped password may hold '@' and '/'.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:)([^\s'\"]*)(@)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&\s'\"]*)", re.IGNORECASE)
# key=value: a quoted value (to the end of the text if the quote is never closed) or a word.
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*(?:'|$)|\S+)", re.IGNORECASE)
_QUOTED = re.compile(r'"([^"]*)"')
_REFUSED_URL = (
    "invalid DSN ({hidden}): {why}; in a postgresql:// URL, percent-encode the user name and "
    "password ('@' as %40, '/' as %2F, ':' as %3A, '?' as %3F, '#' as %23), or use the "
    "key=value form"
)


def redact(text: str) -> str:
    """`text` with every password of a URL or key=value DSN in it replaced by ***."""
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def scrub(text: str, dsn: str = "", *, pieces: bool = True) -> str:
    """`text` (a message that may quote parts of `dsn`) without any part of its password.

    With `pieces` (for what libpq says about a DSN), also every piece between delimiters of
    a password that libpq may have split; without (for pgjobs' own composed messages, which
    quote no piece), only whole passwords."""
    text = redact(text)
    for secret in secrets(dsn, os.environ.get("PGPASSWORD", ""), pieces=pieces):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        else:  # short: only where it stands alone, so that messages stay readable
            text = re.sub(rf"(?<![\w.-]){re.escape(secret)}(?![\w.-])", "***", text)
    if pieces and dsn and _suspect(dsn):
        # What libpq quotes (host, port, database...) may be a piece of the password.
        text = _QUOTED.sub(_hide_quoted, text)
    return text


def _hide_quoted(match: re.Match[str]) -> str:
    # A lone delimiter (libpq's 'missing "=" after ...') cannot be part of a password.
    return match.group() if match.group(1) in {"=", "@", "/", ":", "?", "&"} else '"***"'


def check(dsn: str) -> str | None:
    """Why `dsn` is refused (a message showing no part of it), or None if it is usable."""
    return _check(dsn)


def describe(dsn: str) -> str:
    """host:port/dbname of a DSN, for messages: never any part of the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid DSN>"
    if _check(dsn):
        return HIDDEN
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or "(default)"
    text = f"{host}:{port}/{dbname}"
    return HIDDEN if scrub(text, dsn) != text else text


@lru_cache(maxsize=64)
def _check(dsn: str) -> str | None:
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        return f"invalid DSN ({HIDDEN}): {scrub(_first_line(exc), dsn)}"
    return _ambiguous_url(dsn)


def _suspect(dsn: str) -> bool:
    """Whether libpq cannot read `dsn`, or would read pieces of its password as other fields."""
    return not _parses(dsn) or _ambiguous_url(dsn) is not None


def _ambiguous_url(dsn: str) -> str | None:
    match = _URL_SCHEME.match(dsn)
    if match is None:
        return None
    rest = dsn[match.end() :]
    slash = rest.find("/")
    authority = rest if slash < 0 else rest[:slash]
    path = "" if slash < 0 else rest[slash:].partition("?")[0]
    if authority.count("@") > 1 or "@" in path:
        return _REFUSED_URL.format(
            hidden=HIDDEN,
            why="an unescaped '@' or '/' in its user name or password makes it ambiguous",
        )
    hosts = authority.rpartition("@")[2]
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        port = port.rpartition(":")[2] if ":" in port else ""
        if port and not port.isdigit():
            return _REFUSED_URL.format(
                hidden=HIDDEN,
                why="its port is not a number (an unescaped ':' or '/' in the password?)",
            )
    return None


def _parses(dsn: str) -> bool:
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return False
    return True


@lru_cache(maxsize=64)
def secrets(dsn: str, pgpassword: str = "", *, pieces: bool = True) -> tuple[str, ...]:
    """Every string in or about `dsn` that could be (part of) a password, longest first."""
    found = {pgpassword}
    readable = _parses(dsn)
    suspect = not readable or _ambiguous_url(dsn) is not None
    if readable:
        found.add(str(conninfo_to_dict(dsn).get("password") or ""))
    match = _URL_SCHEME.match(dsn)
    if match:
        rest = dsn[match.end() :]
        # Any '@' may be where the user meant the password to end.
        for at in (i for i, char in enumerate(rest) if char == "@"):
            _user, colon, password = rest[:at].partition(":")
            if colon:
                found.add(password)
        found.update(m.group(2) for m in _QUERY_PASSWORD.finditer(rest))
    else:
        for m in _KV_PASSWORD.finditer(dsn):
            value = m.group(2)
            found.add(value)
            found.add(value.strip("'").replace("\\'", "'").replace("\\\\", "\\"))
            if not readable:  # whatever follows "password=" may be the password
                found.add(dsn[m.start(2) :].strip())
    if not readable:  # maybe no DSN at all but a password, pasted in the wrong place
        found.add(dsn.strip())
    found |= {unquote(secret) for secret in found}
    if pieces and suspect:  # libpq may show any piece of the password on its own
        found |= {piece for s in list(found) for piece in re.split(r"[\s@/:?#&=,'\"\\]+", s)}
    return tuple(sorted((s for s in found if s.strip()), key=len, reverse=True))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
