"""Where the MQTT broker is and how to log in to it, with the secrets kept out of everything stored or shown.

A broker URL is ``mqtt://[USER[:PASSWORD]@]HOST[:PORT][?OPTIONS]`` (``mqtts://`` for TLS; ``tcp://``
and ``ssl://`` are synonyms). OPTIONS are not secret and travel with the URL to every client that
connects with it (the orchestrator, a simulated lab's drivers, ``sdl drivers start --broker URL``):

    credentials=PATH     a credentials file (below)
    tls_ca_file=PATH     CA certificate(s) the broker's certificate must be signed by (PEM); default:
                         the system's trusted CAs
    tls_cert_file=PATH   client certificate (PEM), for a broker that asks for one
    tls_key_file=PATH    its private key (PEM; default: inside tls_cert_file)
    tls_insecure=true    do not check that the certificate names the host (tests only: warned)

The password is found, in this order: a password written in the URL (works, with a warning:
it is replaced by ``***`` as soon as the URL is read, and kept in this process's memory only),
the credentials file (``credentials=`` of the URL, a campaign's ``broker_credentials``, the
``--broker-credentials`` option; else the file ``SDL_BROKER_CREDENTIALS`` names), then the
environment variable ``SDL_BROKER_PASSWORD``. The user name comes with the password from the same
place, else from the URL, else ``SDL_BROKER_USERNAME``. A credentials file holds two lines,
``username: NAME`` and ``password: SECRET`` (``=`` works as well as ``:``; ``#`` starts a comment);
one that other users may read is used, with a warning to ``chmod 600`` it (as ssh does).

Nothing here imports paho: `sdl.config` validates broker URLs with it, and stays light.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from sdl.errors import TransportError

log = logging.getLogger("sdl.transport")

MASK = "***"  # a password's place in every URL that is stored or shown
ENV_USERNAME = "SDL_BROKER_USERNAME"
ENV_PASSWORD = "SDL_BROKER_PASSWORD"
ENV_CREDENTIALS = "SDL_BROKER_CREDENTIALS"
SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}
PATH_OPTIONS = ("credentials", "tls_ca_file", "tls_cert_file", "tls_key_file")
OPTIONS = (*PATH_OPTIONS, "tls_insecure")
HOW = (f"set {ENV_USERNAME} and {ENV_PASSWORD}, or give a credentials file (broker_credentials: PATH in the "
       f"campaign, --broker-credentials PATH, or {ENV_CREDENTIALS}=PATH) holding `username: NAME` and "
       "`password: SECRET`")

# scheme://user:password@ in any text; the password runs to the netloc's last '@' (an unencoded '@' in it)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*)"  # scheme://user
                       r":(?P<pw>[^/?#\s]*)@(?=[^@/?#\s]*(?:[/?#\s]|$))")  # :password@ up to the host


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed broker URL. `password` is one written in the URL (never the mask)."""

    scheme: str
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    credentials: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_insecure: bool = False

    def options(self) -> dict[str, Any]:
        """The options given (OPTIONS), by name."""
        return {k: getattr(self, k) for k in OPTIONS if getattr(self, k)}


@dataclass(frozen=True)
class Credentials:
    username: str | None
    password: str | None
    source: str | None  # where the password came from, in words for messages (never the password)


def redact_url(text: str) -> str:
    """`text` with the password of every URL in it replaced by *** (``mqtt://user:***@host``)."""
    return _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text) if isinstance(text, str) else text


def redact(obj: Any) -> Any:
    """A copy of a JSON-like structure with redact_url applied to every string in it."""
    if isinstance(obj, str):
        return redact_url(obj)
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


def parse(url: str) -> BrokerUrl:
    """A broker URL, parsed; TransportError (naming the URL with its password hidden) if it is not one."""
    shown = redact_url(url) if isinstance(url, str) else url
    parts = urlsplit(url.strip()) if isinstance(url, str) else None
    if parts is None or parts.scheme not in SCHEMES or not parts.hostname:
        raise TransportError(f"broker URL {shown!r} not understood; use mqtt://HOST[:PORT], tcp://HOST[:PORT] or "
                             "mqtts://HOST[:PORT] for TLS (user@ allowed; default port 1883, 8883 with TLS)")
    tls = SCHEMES[parts.scheme]
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise TransportError(f"broker URL {shown!r} has an invalid port; use 1-65535") from None
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in OPTIONS:
            raise TransportError(f"broker URL {shown!r}: unknown option {key!r}; known: {', '.join(OPTIONS)}")
        if key == "tls_insecure":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise TransportError(f"broker URL {shown!r}: tls_insecure={value!r}; use true or false")
            options[key] = value.lower() in ("true", "1", "yes")
        elif value:
            options[key] = value
    password = unquote(parts.password) if parts.password else None
    return BrokerUrl(parts.scheme, parts.hostname, port, tls, unquote(parts.username) if parts.username else None,
                     None if password == MASK else password, **options)


def with_options(url: str, **options: Any) -> str:
    """`url` with the OPTIONS given (None or False: left as they are in the URL) set in its query;
    the URL as it was when there are none to set."""
    given = {k: v for k, v in options.items() if v not in (None, False)}
    unknown = set(given) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown broker URL option(s) {sorted(unknown)}; known: {', '.join(OPTIONS)}")
    if not given:
        return url
    parts = urlsplit(url.strip())
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({k: ("true" if v is True else str(v)) for k, v in given.items()})
    ordered = {k: query[k] for k in OPTIONS if k in query} | {k: v for k, v in query.items() if k not in OPTIONS}
    return urlunsplit(parts._replace(query=urlencode(ordered, safe="/~", quote_via=quote)))


# ----- passwords written in URLs: kept in this process only ----------------------------------------------

_remembered: dict[tuple[str, int, str | None], str] = {}
_lock = threading.Lock()
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message)


def hide_password(url: str) -> str:
    """`url` with a password written in it replaced by *** (what may be stored and shown); the
    password is kept in this process's memory for clients that connect with the redacted URL, and
    a warning (once) says where to put it instead. A URL without a password comes back as it was."""
    b = parse(url)
    if b.password is None:
        return url
    with _lock:
        _remembered[(b.host, b.port, b.username)] = b.password
    shown = redact_url(url)
    warn_once(f"url:{shown}", f"the broker URL {shown} carries a password: it is stored and shown as {MASK} and kept "
              "in this process's memory only (a command line also shows it to every user of this machine); "
              f"instead {HOW}")
    return shown


def forget_passwords() -> None:
    """Drop the passwords remembered from URLs (tests)."""
    with _lock:
        _remembered.clear()
        _warned.clear()


# ----- credentials -------------------------------------------------------------------------------------


def read_credentials_file(path: str) -> tuple[str | None, str | None]:
    """(username, password) from a credentials file; TransportError naming the file (never its
    content) when it cannot be read or holds neither. A file other users may read: warned once."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
        mode = p.stat().st_mode
    except OSError as exc:
        raise TransportError(f"broker credentials file {path}: {exc.strerror or exc}; it should hold "
                             "`username: NAME` and `password: SECRET`") from None
    except UnicodeDecodeError:
        raise TransportError(f"broker credentials file {path} is not text; it should hold `username: NAME` "
                             "and `password: SECRET`") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn_once(f"mode:{p}", f"broker credentials file {path} may be read by other users (mode "
                  f"{stat.S_IMODE(mode):04o}); `chmod 600 {path}`")
    values: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cut = min((i for i in (line.find(":"), line.find("=")) if i >= 0), default=-1)
        key = line[:cut].strip().lower() if cut >= 0 else ""
        if key not in ("username", "user", "password"):
            raise TransportError(f"broker credentials file {path}, line {n}: expected `username: NAME` or "
                                 "`password: SECRET`")  # the line itself could be the secret: not shown
        values["username" if key == "user" else key] = line[cut + 1:].strip()
    if not values.get("password") and not values.get("username"):
        raise TransportError(f"broker credentials file {path} holds no `username:` or `password:` line")
    return values.get("username") or None, values.get("password") or None


def credentials(b: BrokerUrl, username: str | None = None, password: str | None = None) -> Credentials:
    """The user name and password to log in to broker `b` with (see the module's docstring for the
    order); explicit `username`/`password` come first."""
    if password is not None:
        return Credentials(username or b.username, password, "the password given to the client")
    if b.password is not None:
        return Credentials(username or b.username, b.password, "the broker URL")
    with _lock:
        kept = _remembered.get((b.host, b.port, b.username))
    if kept is not None:
        return Credentials(username or b.username, kept, "the broker URL (kept in memory)")
    file = b.credentials or os.environ.get(ENV_CREDENTIALS) or None
    if file:
        user, pw = read_credentials_file(file)
        where = f"credentials file {file}" + ("" if b.credentials else f" ({ENV_CREDENTIALS})")
        return Credentials(username or user or b.username or os.environ.get(ENV_USERNAME) or None, pw, where)
    env_pw, env_user = os.environ.get(ENV_PASSWORD) or None, os.environ.get(ENV_USERNAME) or None
    if env_pw:
        return Credentials(username or env_user or b.username, env_pw, ENV_PASSWORD)
    return Credentials(username or b.username or env_user, None, None)


def check_options(b: BrokerUrl, shown: str) -> None:
    """TransportError for TLS options on a URL without TLS, or a key without a certificate."""
    tls_given = [k for k in ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_insecure") if getattr(b, k)]
    if tls_given and not b.tls:
        raise TransportError(f"broker {shown}: {', '.join(tls_given)} given, but {b.scheme}:// is not TLS; use "
                             f"mqtts://{b.host}:{8883 if b.port == 1883 else b.port}")
    if b.tls_key_file and not b.tls_cert_file:
        raise TransportError(f"broker {shown}: tls_key_file needs tls_cert_file (the client certificate it belongs to)")


def override(b: BrokerUrl, **options: Any) -> BrokerUrl:
    """`b` with the options given (not None) replaced."""
    return replace(b, **{k: v for k, v in options.items() if v is not None})
