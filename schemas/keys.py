"""Sample keys: ``^[A-Za-z0-9_-]+$`` (webdataset splits a member name at its first dot)."""

from __future__ import annotations

import hashlib
import re

from voxshard.schemas.errors import InvalidKeyError

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_DISALLOWED = re.compile(r"[^A-Za-z0-9_-]+")
MAX_KEY_LENGTH = 200


def make_key(corpus: str, source_id: str) -> str:
    """Derive a key from a corpus name and a source id, deterministically.

    Disallowed characters become ``_``. Because that can map two ids onto one string
    (``a:b`` and ``a_b``), a key whose id had to be changed gets an 8-hex digest of the original
    id appended, so distinct ids always give distinct keys.
    """
    if not source_id:
        raise InvalidKeyError(f"{corpus}: empty source id; every row needs an id or a path")
    cleaned = _DISALLOWED.sub("_", source_id).strip("_") or "x"
    if cleaned != source_id or len(cleaned) > MAX_KEY_LENGTH - len(corpus) - 10:
        digest = hashlib.sha1(source_id.encode("utf-8")).hexdigest()[:8]
        cleaned = f"{cleaned[: MAX_KEY_LENGTH - len(corpus) - 10]}-{digest}"
    key = f"{corpus}_{cleaned}"
    validate_key(key)
    return key


def validate_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise InvalidKeyError(
            f"invalid key {key!r}: keys must match {KEY_PATTERN.pattern} "
            "(derive keys with schemas.make_key)"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"key {key[:40]!r}... is longer than {MAX_KEY_LENGTH} characters")
    return key
