"""mosquitto_passwd files, and FilePolicy's authentication, against files the real tool writes.

Every password file here is made by Debian's ``/usr/bin/mosquitto_passwd``, so the parser is
checked against mosquitto's own output rather than against this project's idea of it. The
CONNACK table for FilePolicy was taken from the real mosquitto 2.0.11 with mosquitto_sub.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from fullbroker.access import FilePolicy
from fullbroker.passwords import PasswordFile, PasswordFileError, PasswordHash
from mqtt.packets import ConnackCode, Connect

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
pytestmark = pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="needs Debian's mosquitto_passwd")

USERS = {"alice": "wonderland", "bob": "builder pass", "émile": "ünïcode"}


def mosquitto_passwd(path: Path, user: str, password: str, *options: str) -> None:
    assert MOSQUITTO_PASSWD is not None
    create = [] if path.exists() else ["-c"]
    subprocess.run([MOSQUITTO_PASSWD, *options, "-b", *create, str(path), user, password], check=True)


def password_file(path: Path, users: dict[str, str], *options: str) -> Path:
    for user, password in users.items():
        mosquitto_passwd(path, user, password, *options)
    return path


@pytest.fixture(params=[(), ("-H", "sha512")], ids=["pbkdf2-$7$", "sha512-$6$"])
def passwords_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return password_file(tmp_path / "passwd", USERS, *request.param)


def test_mosquitto_passwd_writes_the_two_formats(tmp_path: Path) -> None:
    # The formats this module reads, as the installed mosquitto_passwd 2.0.11 writes them.
    default = password_file(tmp_path / "default", {"alice": "x"}).read_text()
    sha512 = password_file(tmp_path / "sha512", {"alice": "x"}, "-H", "sha512").read_text()
    assert default.startswith("alice:$7$101$") and default.count("$") == 4
    assert sha512.startswith("alice:$6$") and sha512.count("$") == 3


@pytest.mark.parametrize(
    ("username", "password", "expected"),
    [
        ("alice", b"wonderland", True),
        ("alice", b"wonderlanD", False),
        ("alice", b"wonderland ", False),
        ("alice", b"", False),
        ("alice", None, False),
        ("bob", b"builder pass", True),  # spaces are part of the password
        ("\u00e9mile", "ünïcode".encode(), True),  # UTF-8 username and password
        ("Alice", b"wonderland", False),  # usernames are case-sensitive
        ("mallory", b"wonderland", False),
        ("mallory", None, False),
    ],
)
def test_verify(passwords_path: Path, username: str, password: bytes | None, expected: bool) -> None:
    assert PasswordFile.load(passwords_path).verify(username, password) is expected


def test_has_user_and_len(passwords_path: Path) -> None:
    passwords = PasswordFile.load(passwords_path)
    assert len(passwords) == 3
    assert passwords.has_user("alice") and passwords.has_user("émile")
    assert not passwords.has_user("mallory")
    assert passwords.path == passwords_path


def test_a_changed_password_replaces_the_old_one(tmp_path: Path) -> None:
    path = password_file(tmp_path / "passwd", {"alice": "first"})
    mosquitto_passwd(path, "alice", "second")
    passwords = PasswordFile.load(path)
    assert passwords.verify("alice", b"second") and not passwords.verify("alice", b"first")


def test_a_repeated_user_takes_the_last_line_as_mosquitto_does(tmp_path: Path) -> None:
    first = password_file(tmp_path / "one", {"alice": "first"}).read_text()
    second = password_file(tmp_path / "two", {"alice": "second"}).read_text()
    (tmp_path / "both").write_text(first + second)
    passwords = PasswordFile.load(tmp_path / "both")
    assert len(passwords) == 1
    assert passwords.verify("alice", b"second") and not passwords.verify("alice", b"first")


def test_comments_blank_lines_and_crlf_are_accepted(tmp_path: Path) -> None:
    entry = password_file(tmp_path / "passwd", {"alice": "wonderland"}).read_text().strip()
    (tmp_path / "edited").write_text(f"# users\n\n  # indented\r\n{entry}\r\n\n")
    passwords = PasswordFile.load(tmp_path / "edited")
    assert len(passwords) == 1 and passwords.verify("alice", b"wonderland")


SECRET = "hunter2-plaintext"


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        (f"carol:{SECRET}", "not a mosquitto_passwd hash"),  # plaintext, not yet `-U` converted
        (f"carol{SECRET}", "expected 'username:hash'"),
        (f":$6${SECRET}$aGFzaA==", "expected 'username:hash'"),
        ("carol:", "not a mosquitto_passwd hash"),
        (f"carol:$5${SECRET}$aGFzaA==", "unsupported hash format"),
        (f"carol:$6${SECRET}", "unsupported hash format"),
        (f"carol:$7$101$c2FsdA==$!{SECRET}", "hash is not valid base64"),
        (f"carol:$6$!{SECRET}$aGFzaA==", "salt is not valid base64"),
        (f"carol:$7$0$c2FsdA==${SECRET}", "iteration count"),
        (f"carol:$7$x$c2FsdA==${SECRET}", "iteration count"),
        ("carol:$6$c2FsdA==$aGFzaA==", "hash is 4 bytes, expected 64"),
    ],
)
def test_a_malformed_line_names_path_and_line_but_never_the_secret(
    tmp_path: Path, bad_line: str, fragment: str
) -> None:
    good = password_file(tmp_path / "passwd", {"alice": "wonderland"}).read_text()
    path = tmp_path / "broken"
    path.write_text(f"{good}# next one is broken\n{bad_line}\n")
    with pytest.raises(PasswordFileError) as caught:
        PasswordFile.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert fragment in message
    assert all("hunter2" not in text for text in exception_chain_texts(caught.value))


def exception_chain_texts(exc: BaseException) -> list[str]:
    """The text of an exception and of everything chained to it, as a traceback would show."""
    texts = []
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return texts


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError, match="no-such-file"):
        PasswordFile.load(tmp_path / "no-such-file")


# ---------------------------------------------------------------------------------------------
# FilePolicy.authenticate: CONNACK codes as mosquitto 2.0.11 answers them


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger("test.fullbroker.passwords")


def connect(username: str | None, password: bytes | None) -> Connect:
    return Connect("client-1", username=username, password=password)


ACCEPTED, REFUSED = ConnackCode.ACCEPTED, ConnackCode.NOT_AUTHORIZED


@pytest.mark.parametrize(
    ("allow_anonymous", "username", "password", "expected"),
    [
        (True, None, None, ACCEPTED),
        (False, None, None, REFUSED),
        (True, "alice", b"wonderland", ACCEPTED),
        (False, "alice", b"wonderland", ACCEPTED),
        (True, "alice", b"wrong", REFUSED),  # allow_anonymous does not excuse a wrong password
        (True, "alice", None, REFUSED),
        (True, "mallory", b"anything", REFUSED),
        (False, "mallory", None, REFUSED),
    ],
)
def test_authenticate_with_a_password_file(
    tmp_path: Path,
    log: logging.Logger,
    allow_anonymous: bool,
    username: str | None,
    password: bytes | None,
    expected: int,
) -> None:
    passwords = password_file(tmp_path / "passwd", {"alice": "wonderland"})
    policy = FilePolicy(allow_anonymous, passwords, None, log)
    assert policy.authenticate(connect(username, password)) == expected


@pytest.mark.parametrize(
    ("allow_anonymous", "username", "password", "expected"),
    [
        # mosquitto 2.0.11 without a password_file does not look at the username at all:
        # allow_anonymous alone lets everybody in, or keeps everybody out.
        (True, None, None, ACCEPTED),
        (True, "x", None, ACCEPTED),
        (True, "x", b"y", ACCEPTED),
        (False, None, None, REFUSED),
        (False, "x", None, REFUSED),
        (False, "x", b"y", REFUSED),
    ],
)
def test_authenticate_without_a_password_file(
    log: logging.Logger, allow_anonymous: bool, username: str | None, password: bytes | None, expected: int
) -> None:
    policy = FilePolicy(allow_anonymous, None, None, log)
    assert policy.authenticate(connect(username, password)) == expected


def test_passwords_are_never_logged(
    tmp_path: Path, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    passwords = password_file(tmp_path / "passwd", {"alice": "wonderland"})
    policy = FilePolicy(False, passwords, None, log)
    with caplog.at_level(logging.DEBUG, logger=log.name):
        assert policy.authenticate(connect("alice", b"wonderland")) == ACCEPTED
        assert policy.authenticate(connect("alice", b"guess-number-1")) == REFUSED
        assert policy.authenticate(connect("mallory", b"guess-number-2")) == REFUSED
        policy.reload()
    assert "'alice'" in caplog.text and "'mallory'" in caplog.text  # refusals name the user...
    for password in ("wonderland", "guess-number-1", "guess-number-2"):
        assert password not in caplog.text  # ...but never a password, right or wrong


def test_reload_picks_up_a_new_user_and_reports_the_counts(
    tmp_path: Path, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    passwords = password_file(tmp_path / "passwd", {"alice": "wonderland"})
    (tmp_path / "acl").write_text("user alice\ntopic read a/#\npattern read %c/#\n")
    policy = FilePolicy(False, passwords, tmp_path / "acl", log)
    mosquitto_passwd(passwords, "dave", "diver")
    assert policy.authenticate(connect("dave", b"diver")) == REFUSED  # not before the reload
    with caplog.at_level(logging.INFO, logger=log.name):
        policy.reload()
    assert policy.authenticate(connect("dave", b"diver")) == ACCEPTED
    assert "reloaded password file (2 users) and ACL file (2 rules)" in caplog.text


def test_a_broken_password_file_on_reload_keeps_the_old_users(
    tmp_path: Path, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    passwords = password_file(tmp_path / "passwd", {"alice": "wonderland"})
    policy = FilePolicy(False, passwords, None, log)
    with passwords.open("a") as file:
        file.write(f"dave:{SECRET}\n")  # a plaintext password typed in by hand
    with caplog.at_level(logging.INFO, logger=log.name):
        policy.reload()
    assert policy.authenticate(connect("alice", b"wonderland")) == ACCEPTED
    assert policy.authenticate(connect("dave", SECRET.encode())) == REFUSED
    assert f"{passwords}:2: " in caplog.text and SECRET not in caplog.text


@pytest.mark.parametrize("flipped_byte", [0, 31, 63])
def test_every_byte_of_the_digest_counts(tmp_path: Path, flipped_byte: int) -> None:
    passwords = PasswordFile.load(password_file(tmp_path / "passwd", {"alice": "wonderland"}))
    stored = passwords._entries["alice"]
    assert stored.matches(b"wonderland")
    digest = bytearray(stored.digest)
    digest[flipped_byte] ^= 0x01
    assert not PasswordHash(stored.salt, bytes(digest), stored.iterations).matches(b"wonderland")
