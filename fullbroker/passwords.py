"""mosquitto_passwd files: one ``username:hash`` line per user, never the password itself.

Two hash formats, both with a random salt so equal passwords hash differently::

    alice:$7$101$SALT$HASH   PBKDF2-HMAC-SHA512, 101 rounds, 64-byte key (mosquitto 2.0's default)
    bob:$6$SALT$HASH         SHA-512 of password + salt (mosquitto 1.6; `mosquitto_passwd -H sha512`)

SALT and HASH are standard base64. Checking a password means hashing it again with the
stored salt and comparing digests with ``hmac.compare_digest``, whose running time does not
reveal how many leading bytes matched. An unknown user costs the same hashing work as a known
one, so response time does not reveal which usernames exist. Neither the password nor a hash
ever appears in a log line or an exception message.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from base64 import b64decode
from dataclasses import dataclass
from pathlib import Path

PBKDF2_PREFIX = "7"
SHA512_PREFIX = "6"
DIGEST_SIZE = 64  # SHA-512 output; mosquitto also asks PBKDF2 for 64 bytes


class PasswordFileError(Exception):
    """The password file cannot be read or has a malformed line; names path and line only."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A stored salted hash; ``iterations`` is 0 for the plain SHA-512 ($6$) format."""

    salt: bytes
    digest: bytes
    iterations: int = 0

    def matches(self, password: bytes) -> bool:
        return hmac.compare_digest(self.hash_of(password), self.digest)

    def hash_of(self, password: bytes) -> bytes:
        if self.iterations:
            return hashlib.pbkdf2_hmac("sha512", password, self.salt, self.iterations, DIGEST_SIZE)
        return hashlib.sha512(password + self.salt).digest()


# Checked against when the user is unknown, so that a miss costs a real PBKDF2 computation.
_DECOY = PasswordHash(salt=b"\x00" * 12, digest=b"\x00" * DIGEST_SIZE, iterations=101)


class PasswordFile:
    def __init__(self, entries: dict[str, PasswordHash], path: Path | None = None) -> None:
        self.path = path
        self._entries = entries

    @classmethod
    def load(cls, path: str | Path) -> PasswordFile:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PasswordFileError(f"{path}: cannot read password file: {_reason(exc)}") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path | None = None) -> PasswordFile:
        entries: dict[str, PasswordHash] = {}
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            username, stored = _split_entry(line, f"{path or '<passwords>'}:{number}")
            # A repeated user: the last line wins, as in mosquitto 2.0.11.
            entries[username] = stored
        return cls(entries, path)

    def verify(self, username: str, password: bytes | None) -> bool:
        stored = self._entries.get(username)
        if stored is None:
            _DECOY.matches(password or b"")
            return False
        if password is None:
            return False
        return stored.matches(password)

    def has_user(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def _split_entry(line: str, where: str) -> tuple[str, PasswordHash]:
    username, colon, stored = line.partition(":")
    if not colon or not username:
        raise PasswordFileError(f"{where}: expected 'username:hash'")
    # Every message below names the user and line but never echoes the stored text: a
    # plaintext password typed into the file by mistake must not end up in a log.
    return username, _parse_hash(stored, f"{where}: user {username!r}")


def _parse_hash(stored: str, where: str) -> PasswordHash:
    fields = stored.split("$")
    if len(fields) < 2 or fields[0] != "":
        raise PasswordFileError(f"{where}: not a mosquitto_passwd hash (plaintext? run mosquitto_passwd -U)")
    kind = fields[1]
    if kind == PBKDF2_PREFIX and len(fields) == 5:
        iterations = _parse_iterations(fields[2], where)
        salt, digest = _decode(fields[3], where, "salt"), _decode(fields[4], where, "hash")
    elif kind == SHA512_PREFIX and len(fields) == 4:
        iterations = 0
        salt, digest = _decode(fields[2], where, "salt"), _decode(fields[3], where, "hash")
    else:
        raise PasswordFileError(f"{where}: unsupported hash format (expected $7$ or $6$)")
    if len(digest) != DIGEST_SIZE:
        raise PasswordFileError(f"{where}: hash is {len(digest)} bytes, expected {DIGEST_SIZE}")
    return PasswordHash(salt=salt, digest=digest, iterations=iterations)


def _parse_iterations(text: str, where: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise PasswordFileError(f"{where}: iteration count must be a positive integer")
    return int(text)


def _decode(text: str, where: str, what: str) -> bytes:
    try:
        value = b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PasswordFileError(f"{where}: {what} is not valid base64") from None
    if not value:
        raise PasswordFileError(f"{where}: empty {what}")
    return value


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
