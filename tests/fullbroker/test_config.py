"""mosquitto.conf parsing: every supported key, the defaults, warnings, errors and include_dir.

Where mosquitto 2.0.11 also refuses a configuration, the error table runs the real binary on
the same file and checks that it stops at the same file and line as ``load_config`` does; the
cases where this broker is deliberately stricter are marked and only checked here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fullbroker.config import (
    BridgeConfig,
    BridgeTopic,
    Config,
    ConfigError,
    ListenerConfig,
    load_config,
    mosquitto_sort_key,
)

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


def write(directory: Path, text: str, name: str = "mosquitto.conf") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def load(directory: Path, text: str) -> Config:
    return load_config(write(directory, text))


# ---------------------------------------------------------------------------------------------
# Everything at once

FULL = """\
# A mosquitto.conf using every option this broker reads.
listener 1883
listener 8883 127.0.0.1

allow_anonymous false
password_file /etc/mosquitto/passwd
acl_file acl/rules with spaces.acl
persistence true
persistence_location /var/lib/mosquitto/
persistence_file broker.db
autosave_interval 60
max_connections 500
max_inflight_messages 10
max_queued_messages 200
max_queued_bytes 1048576
message_size_limit 65536
max_keepalive 300
sys_interval 5
log_type error
log_type subscribe
log_dest stdout
log_dest file logs/broker.log
connection_messages false
persistent_client_expiration 2w

connection hq
address hq.example.com:8883 backup.example.com
topic sensors/# out 1
topic cmd/# in 2 site/ hq/site1/
topic "" both 0 local/status remote/status
remote_clientid site1
local_clientid site1-local
remote_username site1
remote_password pass with spaces
cleansession true
keepalive_interval 30
restart_timeout 2 60
try_private false
notifications false
notification_topic site1/bridge/state

connection other
addresses 10.0.0.2:1884
topic x
"""


def test_a_full_config_is_read_into_every_field(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    assert config == Config(
        path=tmp_path / "mosquitto.conf",
        listeners=[ListenerConfig(1883, None), ListenerConfig(8883, "127.0.0.1")],
        allow_anonymous=False,
        password_file=Path("/etc/mosquitto/passwd"),
        acl_file=Path("acl/rules with spaces.acl"),  # relative and kept as written
        persistence=True,
        persistence_location=Path("/var/lib/mosquitto/"),
        persistence_file="broker.db",
        autosave_interval=60,
        max_connections=500,
        max_inflight_messages=10,
        max_queued_messages=200,
        max_queued_bytes=1048576,
        message_size_limit=65536,
        max_keepalive=300,
        sys_interval=5,
        log_types={"error", "subscribe"},
        log_dest=[("stdout", None), ("file", Path("logs/broker.log"))],
        connection_messages=False,
        persistent_client_expiration=14 * 86400,
        bridges=[
            BridgeConfig(
                name="hq",
                addresses=[("hq.example.com", 8883), ("backup.example.com", 1883)],
                topics=[
                    BridgeTopic("sensors/#", "out", 1),
                    BridgeTopic("cmd/#", "in", 2, "site/", "hq/site1/"),
                    BridgeTopic("", "both", 0, "local/status", "remote/status"),
                ],
                remote_clientid="site1",
                local_clientid="site1-local",
                remote_username="site1",
                remote_password="pass with spaces",
                cleansession=True,
                keepalive_interval=30,
                restart_timeout=(2.0, 60.0),
                try_private=False,
                notifications=False,
                notification_topic="site1/bridge/state",
            ),
            BridgeConfig(name="other", addresses=[("10.0.0.2", 1884)], topics=[BridgeTopic("x")]),
        ],
        warnings=[],
    )
    assert config.store_path == Path("/var/lib/mosquitto/broker.db")
    assert config.anonymous_allowed() is False


# ---------------------------------------------------------------------------------------------
# Defaults and anonymous access


def test_an_empty_file_gives_mosquittos_defaults_and_local_only_mode(tmp_path: Path) -> None:
    config = load(tmp_path, "# nothing\n\n")
    assert config.listeners == [ListenerConfig(1883, "127.0.0.1")]
    assert config.local_only
    assert config.allow_anonymous is None and config.anonymous_allowed()
    assert (config.password_file, config.acl_file, config.persistence, config.store_path) == (
        None,
        None,
        False,
        None,
    )
    assert (config.autosave_interval, config.max_connections, config.max_inflight_messages) == (1800, -1, 20)
    assert (config.max_queued_messages, config.max_queued_bytes, config.message_size_limit) == (1000, 0, 0)
    assert (config.max_keepalive, config.sys_interval, config.persistent_client_expiration) == (
        65535,
        10,
        None,
    )
    assert config.log_types == {"error", "warning", "notice", "information"}
    assert config.log_dest == [("stderr", None)]
    assert config.connection_messages and config.bridges == [] and config.warnings == []


def test_the_no_file_default() -> None:
    config = Config.default()
    assert config.path is None
    assert config.listeners == [ListenerConfig(1883, "127.0.0.1")]
    assert config.anonymous_allowed()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),  # local only mode
        ("listener 1884\n", False),  # mosquitto 2.0: a listener makes the broker closed by default
        ("port 1884\n", False),
        ("bind_address 127.0.0.1\n", False),
        ("listener 1884\nallow_anonymous true\n", True),
        ("allow_anonymous false\n", False),  # explicit wins, even in local only mode
        ("allow_anonymous 1\n", True),  # mosquitto also accepts 1 and 0
        ("allow_anonymous true\nallow_anonymous 0\n", False),  # the last one wins
    ],
)
def test_anonymous_allowed(tmp_path: Path, text: str, expected: bool) -> None:
    assert load(tmp_path, text).anonymous_allowed() is expected


@pytest.mark.parametrize(
    ("text", "listeners"),
    [
        ("listener 1884\nlistener 1885 ::1\n", [(1884, None), (1885, "::1")]),
        ("port 1884\n", [(1884, None)]),
        ("bind_address 10.0.0.1\n", [(1883, "10.0.0.1")]),
        ("port 1884\nbind_address 10.0.0.1\n", [(1884, "10.0.0.1")]),
        ("listener 1885\nport 1884\n", [(1884, None), (1885, None)]),  # the default listener first
        ("port 1884\nport 1886\n", [(1886, None)]),
    ],
)
def test_listeners(tmp_path: Path, text: str, listeners: list[tuple[int, str | None]]) -> None:
    config = load(tmp_path, text)
    assert [(listener.port, listener.address) for listener in config.listeners] == listeners
    assert not config.local_only


def test_store_path_without_a_location_is_relative_to_the_working_directory(tmp_path: Path) -> None:
    assert load(tmp_path, "persistence true\n").store_path == Path("mosquitto.db")
    assert load(tmp_path, "persistence_location db\n").store_path is None  # persistence is off


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1h", 3600), ("2d", 2 * 86400), ("3w", 21 * 86400), ("1m", 30 * 86400), ("1y", 365 * 86400)],
)
def test_persistent_client_expiration_units(tmp_path: Path, value: str, seconds: int) -> None:
    assert load(tmp_path, f"persistent_client_expiration {value}\n").persistent_client_expiration == seconds


ALL_LOG_TYPES = {
    "error",
    "warning",
    "notice",
    "information",
    "debug",
    "subscribe",
    "unsubscribe",
    "websockets",
}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["log_type debug"], {"debug"}),  # the first log_type replaces the defaults
        (["log_type debug", "log_type websockets"], {"debug", "websockets"}),
        (["log_type none"], set()),
        (["log_type all"], ALL_LOG_TYPES),
        (["log_type error", "log_type all"], ALL_LOG_TYPES),
    ],
)
def test_log_type(tmp_path: Path, lines: list[str], expected: set[str]) -> None:
    assert load(tmp_path, "\n".join(lines) + "\n").log_types == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["log_dest stdout"], [("stdout", None)]),  # replaces the default stderr
        (["log_dest stderr", "log_dest stdout", "log_dest stdout"], [("stderr", None), ("stdout", None)]),
        (["log_dest file /var/log/a b.log"], [("file", Path("/var/log/a b.log"))]),  # rest of the line
        (["log_dest file one.log", "log_dest file two.log"], [("file", Path("two.log"))]),  # one file
        (["log_dest none"], []),
    ],
)
def test_log_dest(tmp_path: Path, lines: list[str], expected: list[tuple[str, Path | None]]) -> None:
    assert load(tmp_path, "\n".join(lines) + "\n").log_dest == expected


def test_comments_blank_lines_whitespace_and_crlf(tmp_path: Path) -> None:
    text = "# comment\r\n\r\n   \t\r\n  max_connections 7  \r\n"
    text += "  # an indented comment (an error in mosquitto 2.0.11; harmless, so allowed here)\r\n"
    text += "password_file  p w \r\n"
    config = load(tmp_path, text)
    assert config.max_connections == 7
    assert config.password_file == Path("p w")  # the rest of the line, trimmed
    assert config.warnings == []


# ---------------------------------------------------------------------------------------------
# Bridges


def bridge(tmp_path: Path, *lines: str) -> BridgeConfig:
    text = "\n".join(["connection b", "address 127.0.0.1", "topic t", *lines]) + "\n"
    (only,) = load(tmp_path, text).bridges
    return only


def test_bridge_defaults(tmp_path: Path) -> None:
    assert bridge(tmp_path) == BridgeConfig(
        name="b",
        addresses=[("127.0.0.1", 1883)],
        topics=[BridgeTopic("t", "out", 0, "", "")],
        remote_clientid=None,
        local_clientid=None,
        remote_username=None,
        remote_password=None,
        cleansession=False,
        keepalive_interval=60,
        restart_timeout=(5.0, 30.0),
        try_private=True,
        notifications=True,
        notification_topic=None,
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("restart_timeout 10", (10.0, 10.0)),  # one value: a constant delay
        ("restart_timeout 3 90", (3.0, 90.0)),  # two: exponential backoff from base to cap
        ("restart_timeout 2.5 2.5", (2.5, 2.5)),
        ("restart_timeout 0", (1.0, 1.0)),  # raised to 1 s, with a warning, as mosquitto does
    ],
)
def test_restart_timeout(tmp_path: Path, line: str, expected: tuple[float, float]) -> None:
    assert bridge(tmp_path, line).restart_timeout == expected


def test_too_low_values_are_raised_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "connection b\naddress h\ntopic t\nkeepalive_interval 2\nrestart_timeout 0 10\n")
    config = load_config(path)
    assert config.bridges[0].keepalive_interval == 5
    assert config.bridges[0].restart_timeout == (1.0, 10.0)
    assert config.warnings == [
        f"{path}:4: warning: keepalive_interval too low, using 5 seconds",
        f"{path}:5: warning: restart_timeout too low, using 1 second",
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("topic a/#", BridgeTopic("a/#", "out", 0, "", "")),
        ("topic a/# in", BridgeTopic("a/#", "in", 0, "", "")),
        ("topic a/# both 2", BridgeTopic("a/#", "both", 2, "", "")),
        ("topic a/# in 1 loc/", BridgeTopic("a/#", "in", 1, "loc/", "")),
        ("topic a/# in 1 loc/ rem/", BridgeTopic("a/#", "in", 1, "loc/", "rem/")),
        ('topic a/# in 1 "" rem/', BridgeTopic("a/#", "in", 1, "", "rem/")),
        ('topic "" out 0 local/x remote/y', BridgeTopic("", "out", 0, "local/x", "remote/y")),
        ('topic "" out 0 "" remote/y', BridgeTopic("", "out", 0, "", "remote/y")),
    ],
)
def test_bridge_topic_forms(tmp_path: Path, line: str, expected: BridgeTopic) -> None:
    assert bridge(tmp_path, line).topics[1] == expected


@pytest.mark.parametrize(
    ("alias", "field"),
    [("clientid", "remote_clientid"), ("username", "remote_username"), ("password", "remote_password")],
)
def test_mosquitto_1_spellings_of_bridge_options(tmp_path: Path, alias: str, field: str) -> None:
    assert getattr(bridge(tmp_path, f"{alias} someone"), field) == "someone"


def test_a_stanza_ends_at_the_next_connection_and_global_keys_stay_global(tmp_path: Path) -> None:
    text = "connection a\naddress h1\ntopic x\nmax_connections 3\nlistener 1884\nremote_clientid ra\n"
    text += "connection b\naddress h2\ntopic y\nremote_clientid rb\n"
    config = load(tmp_path, text)
    assert config.max_connections == 3 and config.listeners == [ListenerConfig(1884, None)]
    assert [(b.name, b.remote_clientid) for b in config.bridges] == [("a", "ra"), ("b", "rb")]


# ---------------------------------------------------------------------------------------------
# Warnings


def test_options_mosquitto_has_but_this_broker_lacks_are_warnings(tmp_path: Path) -> None:
    text = "listener 8883\ncafile /etc/ca.pem\nauth_opt_backend files\nlog_dest syslog\nmax_connections 9\n"
    text += "connection b\naddress h\ntopic t\nbridge_cafile x.pem\n"
    path = write(tmp_path, text)
    config = load_config(path)
    assert config.warnings == [
        f"{path}:2: warning: unsupported option 'cafile' ignored",
        f"{path}:3: warning: unsupported option 'auth_opt_backend' ignored",
        f"{path}:4: warning: unsupported option 'log_dest syslog' ignored",
        f"{path}:9: warning: unsupported option 'bridge_cafile' ignored",
    ]
    assert config.max_connections == 9  # the lines after a warning are still read
    assert config.log_dest == []  # syslog replaced the default but is not implemented


# ---------------------------------------------------------------------------------------------
# Errors

B = "connection b\naddress 127.0.0.1:1\n"  # lines 1-2 of the bridge cases

ERRORS = [
    # text, line of the error, fragment of our message, whether mosquitto 2.0.11 refuses it too
    ("port abc\n", 1, "invalid port value 'abc'", True),
    ("listener abc\n", 1, "invalid listener value 'abc'", True),
    ("listener 70000\n", 1, "invalid port '70000'", True),
    ("listener 0\n", 1, "invalid port '0'", True),  # port 0 is a Unix socket in mosquitto
    ("# c\nlistener\n", 2, "listener needs a port", True),
    ("listener 1883 127.0.0.1 extra\n", 1, "expected 'listener PORT [ADDRESS]'", False),
    ("allow_anonymous maybe\n", 1, "invalid allow_anonymous value 'maybe'", True),
    ("allow_anonymous True\n", 1, "invalid allow_anonymous value 'True'", True),
    ("allow_anonymous yes\n", 1, "invalid allow_anonymous value 'yes'", True),
    ("allow_anonymous\n", 1, "allow_anonymous needs a value", False),
    ("max_connections x\n", 1, "invalid max_connections value 'x'", False),  # mosquitto: atoi
    ("max_connections 5 6\n", 1, "max_connections takes one value", False),
    ("max_queued_messages -1\n", 1, "max_queued_messages must be at least 0", False),
    ("max_keepalive 0\n", 1, "max_keepalive must be between 1 and 65535", True),
    ("max_keepalive 70000\n", 1, "max_keepalive must be between 1 and 65535", True),
    ("sys_interval -1\n", 1, "invalid sys_interval value '-1'", True),
    ("autosave_interval soon\n", 1, "invalid autosave_interval value 'soon'", False),
    ("log_type bogus\n", 1, "invalid log_type 'bogus'", True),
    ("log_type info\n", 1, "invalid log_type 'info'", True),
    ("log_dest foo\n", 1, "invalid log_dest 'foo'", True),
    ("log_dest file\n", 1, "'log_dest file' needs a path", True),
    ("persistent_client_expiration 5\n", 1, "invalid persistent_client_expiration '5'", True),
    ("persistent_client_expiration 5x\n", 1, "invalid persistent_client_expiration '5x'", True),
    ("persistent_client_expiration 0h\n", 1, "invalid persistent_client_expiration '0h'", True),
    ("persistent_client_expiration 1 h\n", 1, "takes one value", True),
    ("password_file\n", 1, "password_file needs a value", True),
    ("include_dir\n", 1, "include_dir needs a value", True),
    ("include_dir no-such-dir\n", 1, "cannot open include_dir 'no-such-dir'", True),
    ("bogus_key 1\n", 1, "unknown configuration option 'bogus_key'", True),
    ("topic a out\n", 1, "'topic' is a bridge option, but no 'connection' is open", True),
    ("listener 1883\naddress h\n", 2, "'address' is a bridge option", True),
    ("connection\n", 1, "connection needs a value", True),
    ("connection b\n", 1, "bridge 'b' has no address", True),
    (B, 1, "bridge 'b' has no topic", True),
    (B + "topic x\nconnection b\naddress h\ntopic y\n", 4, "duplicate bridge name 'b'", True),
    (B + "address 127.0.0.1:2\n", 3, "bridge 'b' already has its addresses", True),
    (B + "addresses h\n", 3, "already has its addresses", True),
    ("connection b\naddress 127.0.0.1:abc\n", 2, "invalid address value 'abc'", True),
    ("connection b\naddress 127.0.0.1:70000\n", 2, "invalid port '70000'", True),
    ("connection b\naddress\n", 2, "address needs at least one host[:port]", False),
    ("connection b\naddress ::1\n", 2, "IPv6 addresses are not supported", False),
    (B + "topic\n", 3, "topic needs a pattern", True),
    (B + "topic x sideways\n", 3, "invalid bridge topic direction 'sideways'", True),
    (B + "topic x out 3\n", 3, "invalid bridge topic QoS '3'", True),
    (B + "topic x out -1\n", 3, "invalid bridge topic QoS '-1'", True),
    (B + "topic x out q\n", 3, "invalid bridge topic QoS 'q'", False),  # mosquitto: atoi
    (B + 'topic "" in 1\n', 3, "needs a local or remote prefix", True),
    (B + 'topic "" in 1 "" ""\n', 3, "needs a local or remote prefix", True),
    (B + "topic x in 1 a/+/ b/\n", 3, "invalid bridge topic local prefix 'a/+/'", True),
    (B + "topic x in 1 a/ b/#\n", 3, "invalid bridge topic remote prefix 'b/#'", True),
    (B + "topic x/#/y\n", 3, "invalid bridge topic pattern 'x/#/y'", False),
    (B + "topic x both 2 a/ b/ extra\n", 3, "expected 'topic PATTERN", False),
    (B + "topic x\nrestart_timeout 10 5\n", 4, "restart_timeout cap is lower than its base", True),
    (B + "topic x\nrestart_timeout\n", 4, "expected 'restart_timeout SECONDS'", False),
    (B + "topic x\ncleansession maybe\n", 4, "invalid cleansession value 'maybe'", True),
    (B + "topic x\nremote_clientid\n", 4, "remote_clientid needs a value", True),
    (B + "topic x\nnotification_topic\n", 4, "notification_topic needs a value", True),
    (B + "topic x\nnotification_topic a/+\n", 4, "invalid notification_topic 'a/+'", False),
]


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def case_id(text: str) -> str:
    return text.splitlines()[-1]  # the offending line is the last one in every case


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [case[:3] for case in ERRORS],
    ids=[case_id(case[0]) for case in ERRORS],
)
def test_malformed_configs_are_errors_at_their_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}: ")
    assert fragment in message


def mosquitto_refusal(path: Path) -> tuple[int, str | None]:
    """Run the real broker on ``path``: its exit status and the first "file:line" it blames."""
    assert MOSQUITTO is not None
    # cwd: relative paths in the config (include_dir) resolve where load_config resolves them.
    result = subprocess.run(
        [MOSQUITTO, "-c", str(path)], capture_output=True, text=True, timeout=10, cwd=path.parent
    )
    found = re.search(r"Error found at (.+?):(\d+)\.", result.stdout + result.stderr)
    return result.returncode, f"{found.group(1)}:{found.group(2)}" if found else None


@pytest.mark.skipif(MOSQUITTO is None, reason="needs Debian's mosquitto")
@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [(text, line, fragment) for text, line, fragment, agrees in ERRORS if agrees],
    ids=[case_id(case[0]) for case in ERRORS if case[3]],
)
def test_mosquitto_refuses_the_same_configs_at_the_same_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: int, fragment: str
) -> None:
    path = write(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    status, blamed = mosquitto_refusal(path)
    assert status != 0
    if fragment.endswith(("has no address", "has no topic")):
        # mosquitto checks bridges after reading and names no line; we name the `connection`.
        assert blamed is None
    else:
        assert blamed == f"{path}:{line}"


def test_a_missing_config_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "absent.conf"))):
        load_config(tmp_path / "absent.conf")


# ---------------------------------------------------------------------------------------------
# include_dir


def test_include_dir_reads_conf_files_in_mosquittos_order_where_it_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # include_dir is relative, resolved against the working directory
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "sub.conf").mkdir()  # a directory, not a file: skipped
    for port, name in enumerate(["b", "A", "01", "a", "B", "00"], start=2001):
        write(tmp_path / "conf.d", f"listener {port}\n", f"{name}.conf")
    write(tmp_path / "conf.d", "bogus_key 1\n", "notes.txt")  # not *.conf: never read
    write(tmp_path / "conf.d", "bogus_key 1\n", "old.conf.bak")
    write(tmp_path / "conf.d", "max_connections 2\nmax_queued_messages 3\n", "zz.conf")
    config = load(tmp_path, "max_connections 1\ninclude_dir conf.d\nmax_queued_messages 7\n")
    # 00, 01, A, a, B, b: the order mosquitto.conf(5) documents and mosquitto 2.0.11 follows.
    assert [listener.port for listener in config.listeners] == [2006, 2003, 2002, 2004, 2005, 2001]
    assert config.max_connections == 2  # the included file comes after line 1...
    assert config.max_queued_messages == 7  # ...and before line 3


def test_mosquitto_sort_key() -> None:
    names = ["b.conf", "A.conf", "01.conf", "a.conf", "B.conf", "00.conf", "ab.conf", "a_.conf"]
    assert sorted(names, key=mosquitto_sort_key) == [
        "00.conf",
        "01.conf",
        "A.conf",
        "a.conf",
        "a_.conf",
        "ab.conf",
        "B.conf",
        "b.conf",
    ]


def test_an_error_in_an_included_file_names_that_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inc").mkdir()
    write(tmp_path / "inc", "listener 2001\n", "a.conf")
    write(tmp_path / "inc", "# two\nlistener 2002\nport abc\n", "b.conf")
    path = write(tmp_path, "include_dir inc\n")
    assert error_of(path).startswith("inc/b.conf:3: ")
    if MOSQUITTO is not None:
        assert mosquitto_refusal(path)[1] == "inc/b.conf:3"


def test_an_included_file_opens_no_stanza_and_continues_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inc").mkdir()
    write(tmp_path / "inc", "topic y\n", "a.conf")
    path = write(tmp_path, "connection b\naddress h\ntopic x\ninclude_dir inc\n")
    assert error_of(path).startswith("inc/a.conf:1: 'topic' is a bridge option")
    if MOSQUITTO is not None:
        assert mosquitto_refusal(path)[1] == "inc/a.conf:1"
    # ...and the main file's stanza is still open after the include.
    write(tmp_path / "inc", "max_connections 4\n", "a.conf")
    write(tmp_path / "inc", "connection c\naddress h\ntopic z\n", "b.conf")
    config = load(tmp_path, "connection b\naddress h\ninclude_dir inc\ntopic x\n")
    assert [(b.name, [t.pattern for t in b.topics]) for b in config.bridges] == [("b", ["x"]), ("c", ["z"])]
    assert config.max_connections == 4


def test_include_dir_inside_an_included_file_is_ignored_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inc").mkdir()
    write(tmp_path / "inc", "include_dir inc\nlistener 2001\n", "a.conf")  # would recurse forever
    config = load(tmp_path, "include_dir inc\n")
    assert config.listeners == [ListenerConfig(2001, None)]
    assert config.warnings == [
        "inc/a.conf:1: warning: include_dir is only read from the main config file; ignored"
    ]
