"""Where the S3 endpoint and keys come from; they never enter records, logs or messages.

Endpoint: the ``s3_endpoint`` argument (CLI ``--s3-endpoint``), else ``AWS_ENDPOINT_URL``, else
AWS S3 (``https://s3.amazonaws.com``). ``http://`` / ``https://`` choose TLS explicitly; a bare
``host:port`` uses TLS unless the host is loopback (``localhost``, ``127.*``, ``::1``).

Keys, first found wins:

1. ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN`` optional);
2. files named by ``AWS_ACCESS_KEY_ID_FILE`` and ``AWS_SECRET_ACCESS_KEY_FILE``;
3. a mounted Kubernetes Secret directory, ``FDSHPO_S3_SECRET_DIR`` (default
   ``/var/run/secrets/fdshpo/s3``), holding ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
   or ``accesskey`` / ``secretkey`` (the key names of KFP's ``mlpipeline-minio-artifact``).

Region: ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (optional).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .base import StoreError

DEFAULT_SECRET_DIR = "/var/run/secrets/fdshpo/s3"
_KEY_FILE_NAMES = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("accesskey", "secretkey"))


@dataclass(frozen=True)
class Endpoint:
    """``host[:port]`` and whether to use TLS."""

    host: str
    secure: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}"


@dataclass(frozen=True)
class Credentials:
    """S3 keys; ``repr`` hides them so they cannot leak through a log line or a traceback."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


#: ``scheme://`` then everything up to the last ``@`` before whitespace: the user info of a
#: URL whose secret may itself hold ``/`` or ``@`` (a host never does)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?!/)\S*@")
#: a bare ``user:secret@host[:port]`` (an endpoint without a scheme), up to its last ``@``
_BARE_USERINFO = re.compile(r"^(?![/.~])\S*@")


def redact_userinfo(text: str) -> str:
    """``text`` with the user info of every URL in it (``scheme://user:secret@host``, or a
    bare ``user:secret@host`` at the start of a text without ``://``) replaced by ``***``.

    The user info runs from ``://`` to the *last* ``@`` before the next whitespace, so a
    secret containing ``/`` or ``@`` is hidden whole: ``http://u:a/b@c@h`` becomes
    ``http://***@h``. An empty authority (``file:///path@x``) holds no user info. A path
    with an ``@`` in an authority-bearing URL (``s3://bucket/a@b``) is redacted too: which
    ``@`` ends a secret cannot be told, so the rule errs on the side of hiding."""
    if "://" in text:
        return _URL_USERINFO.sub(r"\g<scheme>***@", text)
    return _BARE_USERINFO.sub("***@", text)


def has_userinfo(text: str) -> bool:
    """True when :func:`redact_userinfo` would hide something in ``text``."""
    return redact_userinfo(text) != text


def parse_endpoint(endpoint: str | None = None) -> Endpoint:
    """The endpoint from the argument or ``AWS_ENDPOINT_URL`` (see the module docstring).

    Raises StoreError (with any user info redacted) for anything but ``http(s)://host[:port]``
    or a bare ``host[:port]``: no path, no user info (keys never go in a URL)."""
    raw = endpoint or os.environ.get("AWS_ENDPOINT_URL") or "https://s3.amazonaws.com"
    shown = redact_userinfo(raw)
    if "@" in raw:
        raise StoreError(f"S3 endpoint {shown!r} carries user info: put no keys in the URL; "
                         "give them in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or "
                         "AWS_*_FILE, or a mounted Secret) and the endpoint as "
                         "scheme://host[:port]")
    parts = urlsplit(raw if "://" in raw else f"//{raw}")
    if "://" in raw and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise StoreError(f"S3 endpoint {shown!r} is not an http(s) URL; give e.g. "
                         "http://127.0.0.1:9000 or https://minio.example.com")
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if not parts.hostname or not port_ok or parts.path not in ("", "/") or parts.query:
        raise StoreError(f"S3 endpoint {shown!r} must be scheme://host[:port] only (a host, "
                         "an optional numeric port, no path), e.g. http://minio.kubeflow:9000")
    if "://" in raw:
        return Endpoint(parts.netloc, parts.scheme == "https")
    return Endpoint(parts.netloc, not is_loopback(parts.netloc))


PLACEHOLDER_PREFIX = "REPLACE_WITH_"


def check_not_placeholder(credentials: Credentials) -> Credentials:
    """Raise StoreError when a key is still a ``REPLACE_WITH_...`` placeholder (copied from a
    committed ``.env.example`` and never filled in)."""
    for what, value in (("access key", credentials.access_key),
                        ("secret key", credentials.secret_key)):
        if value.startswith(PLACEHOLDER_PREFIX):
            raise StoreError(
                f"the S3 {what} from {credentials.source} is still the placeholder "
                f"{PLACEHOLDER_PREFIX}...: put real keys in the env file the Secret is generated "
                "from (k8s/**/*.env, copied from its .env.example) and apply again")
    return credentials


def _read(path: Path) -> str:
    return path.read_text().strip()


def resolve_credentials(environ: dict | None = None) -> Credentials:
    """Keys from the environment, ``*_FILE`` variables or a mounted Secret directory.

    Raises StoreError naming the variables to set when none are found.
    """
    env = os.environ if environ is None else environ
    token = env.get("AWS_SESSION_TOKEN") or None
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        return check_not_placeholder(Credentials(access, secret, token, "the environment"))
    access_file, secret_file = env.get("AWS_ACCESS_KEY_ID_FILE"), env.get(
        "AWS_SECRET_ACCESS_KEY_FILE")
    if access_file and secret_file:
        try:
            creds = Credentials(_read(Path(access_file)), _read(Path(secret_file)), token,
                                "AWS_*_FILE")
        except OSError as exc:
            raise StoreError(f"cannot read the S3 key file {exc.filename}: {exc.strerror}; "
                             "check AWS_ACCESS_KEY_ID_FILE / AWS_SECRET_ACCESS_KEY_FILE") from None
        return check_not_placeholder(creds)
    secret_dir = Path(env.get("FDSHPO_S3_SECRET_DIR") or DEFAULT_SECRET_DIR)
    for access_name, secret_name in _KEY_FILE_NAMES:
        a, s = secret_dir / access_name, secret_dir / secret_name
        if a.is_file() and s.is_file():
            return check_not_placeholder(Credentials(_read(a), _read(s), token,
                                                     f"secret directory {secret_dir}"))
    raise StoreError(
        "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
        "AWS_ACCESS_KEY_ID_FILE and AWS_SECRET_ACCESS_KEY_FILE, or mount a Secret with keys "
        f"accesskey/secretkey at {secret_dir} (FDSHPO_S3_SECRET_DIR)")
