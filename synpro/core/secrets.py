"""The one masking function: secrets stay in the process, every text that leaves it goes through `mask`.

A run must still connect, so specs keep their real URLs in memory; what is written (the workdir's
spec, store rows, MLflow params and artifacts) or shown (output, error messages, error logs) is
masked. Two kinds of secret are recognised: those a pattern can spot anywhere (the password of a
URL, a `token=...`-style pair) and literal values registered with `hide` (an API key read from the
environment appears in an error message with no label around it).
"""

from __future__ import annotations

import re

MASK = "***"

# user:password@ in any scheme://; the password runs to the last @ before the host.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^\s/]*@")
# key=value / key: value pairs whose key names a secret (query strings, YAML, env dumps, headers).
_SECRET_PAIR = re.compile(
    r"(?P<key>\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key)\b"
    r"[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s&\"',;}]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<key>\bBearer\s+)(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
_hidden: set[str] = set()


def hide(*values: str | None) -> None:
    """Mask these literal values wherever they occur from now on (in this process)."""
    _hidden.update(v for v in values if v and len(v) >= 4)  # shorter ones would mask ordinary words


def mask(text: str) -> str:
    """`text` with every recognisable secret replaced by ***."""
    for value in sorted(_hidden, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK + "@", text)
    text = _SECRET_PAIR.sub(lambda m: m["key"] + (m["value"] if m["value"] == MASK else MASK), text)
    return _BEARER.sub(lambda m: m["key"] + MASK, text)
