"""No secrets in outputs: URIs lose their query string, fragment and user info wherever
they are recorded, printed or logged (presigned URLs carry X-Amz-Signature and
X-Amz-Security-Token in the query; `user:pass@host` carries a password)."""

from __future__ import annotations

import re

_URI = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_uri(uri: str | None) -> str | None:
    """scheme://host/path of `uri`, without user info, query string or fragment."""
    if not uri or "://" not in uri:
        return uri
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri.split("?", 1)[0].split("#", 1)[0]
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    if parts.scheme == "s3":
        host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_text(text: str) -> str:
    """`text` with every URI in it redacted."""
    return _URI.sub(lambda m: redact_uri(m.group(0)) or "", text)


def redact_value(value):
    """`value` with every string in it (nested dicts, lists, tuples; keys too) redacted,
    e.g. a config before it is written to run.json."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactedMessage(Exception):
    """Mixin for error classes whose messages name URIs: every string argument is redacted
    when the error is made, so no caller can leak a presigned query or a password through
    it (`class StorageError(RedactedMessage, OSError)`)."""

    def __init__(self, *args):
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))
