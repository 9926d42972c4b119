"""Sample keys: ``^[A-Za-z0-9_-]+$`` (webdataset splits a member name at its first dot)."""

from __future__ import annotations

import hashlib
import re

from voxshard.schemas.errors import InvalidKeyError

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_DISALLOWED = re.compile(r"[^A-Za-z0-9_-]+")
_DIGEST_SUFFIX = re.compile(r"-[0-9a-f]{8}$")
MAX_KEY_LENGTH = 200


def make_key(corpus: str, source_id: str) -> str:
    """Derive a key from a corpus name and a source id, deterministically.

    Disallowed characters become ``_``. Because that can map two ids onto one string
    (``a:b`` and ``a_b``), a key whose id had to be changed gets ``-`` and an 8-hex digest of
    the original id appended. An id that already ends that way (``a_b-dcea6d9c``, which is
    what ``a:b`` becomes) gets a digest too, so ids kept as they are and ids that were changed
    never meet. Keys that still coincide (a 32-bit digest collision) are rejected as duplicate
    keys with both rows named, never merged.
    """
    if not source_id:
        raise InvalidKeyError(f"{corpus}: empty source id; every row needs an id or a path")
    cleaned = _DISALLOWED.sub("_", source_id).strip("_") or "x"
    changed = cleaned != source_id or bool(_DIGEST_SUFFIX.search(cleaned))
    if changed or len(cleaned) > MAX_KEY_LENGTH - len(corpus) - 10:
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
