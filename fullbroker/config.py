"""mosquitto.conf, read the way mosquitto 2.0 reads it.

Each line is ``key value...``; blank lines and lines starting with ``#`` are skipped. A
single-valued key may be repeated and the last one wins; ``listener``, ``log_type``,
``log_dest`` and ``connection`` accumulate. The rules below were checked against the real
mosquitto 2.0.11:

* A malformed value stops the broker from starting: ``ConfigError("file:line: ...")``.
* A key mosquitto knows but this broker does not implement is a warning, not an error, so a
  real mosquitto.conf still loads. A key mosquitto does not know is an error, as in mosquitto:
  a typo in ``allow_anonymous`` must not silently leave the broker open.
* ``include_dir`` reads that directory's ``*.conf`` files at the point where it appears (in
  mosquitto's order: A.conf, a.conf, B.conf, b.conf), and only from the main file.
* ``connection NAME`` opens a bridge stanza that lasts until the next ``connection`` or the end
  of that file; bridge keys outside a stanza are errors.
* Paths are kept as written; mosquitto resolves relative ones against its working directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mqtt.errors import ProtocolError
from mqtt.topics import validate_filter, validate_topic_name

DEFAULT_PORT = 1883
DEFAULT_LOG_TYPES = frozenset({"error", "warning", "notice", "information"})
LOG_TYPES = frozenset(
    {"error", "warning", "notice", "information", "debug", "subscribe", "unsubscribe", "websockets"}
)
MAX_PACKET_PAYLOAD = 268_435_455  # the largest remaining length MQTT can encode
BRIDGE_MIN_KEEPALIVE = 5  # mosquitto raises a lower keepalive_interval to 5 s
BRIDGE_MIN_RESTART = 1.0  # and a lower restart_timeout to 1 s
DURATION_UNITS = {"h": 3600, "d": 86_400, "w": 7 * 86_400, "m": 30 * 86_400, "y": 365 * 86_400}

# Options mosquitto 2.0.11 accepts that this broker does not implement (each one was fed to the
# real binary, which did not answer "Unknown configuration variable"). They load with a warning.
UNSUPPORTED_KEYS = frozenset(
    {
        "allow_duplicate_messages",
        "allow_zero_length_clientid",
        "auth_plugin",
        "auth_plugin_deny_special_chars",
        "auto_id_prefix",
        "autosave_on_changes",
        "bind_interface",
        "bridge_alpn",
        "bridge_attempt_unsubscribe",
        "bridge_bind_address",
        "bridge_cafile",
        "bridge_capath",
        "bridge_certfile",
        "bridge_identity",
        "bridge_insecure",
        "bridge_keyfile",
        "bridge_max_packet_size",
        "bridge_outgoing_retain",
        "bridge_protocol_version",
        "bridge_psk",
        "bridge_require_ocsp",
        "bridge_tls_version",
        "cafile",
        "capath",
        "certfile",
        "check_retain_source",
        "ciphers",
        "clientid_prefixes",
        "crlfile",
        "dhparamfile",
        "http_dir",
        "idle_timeout",
        "keyfile",
        "local_cleansession",
        "local_password",
        "local_username",
        "log_facility",
        "log_timestamp",
        "log_timestamp_format",
        "max_inflight_bytes",
        "max_packet_size",
        "max_qos",
        "max_topic_alias",
        "maximum_qos",
        "memory_limit",
        "mount_point",
        "notifications_local_only",
        "per_listener_settings",
        "pid_file",
        "plugin",
        "protocol",
        "psk_file",
        "psk_hint",
        "queue_qos0_messages",
        "require_certificate",
        "retain_available",
        "retained_persistence",
        "retry_interval",
        "round_robin",
        "set_tcp_nodelay",
        "socket_domain",
        "start_type",
        "threshold",
        "tls_engine",
        "tls_engine_kpass_sha1",
        "tls_keyform",
        "tls_version",
        "upgrade_outgoing_qos",
        "use_identity_as_username",
        "use_subject_as_username",
        "use_username_as_clientid",
        "user",
        "websockets_headers_size",
        "websockets_log_level",
    }
)
UNSUPPORTED_PREFIXES = ("auth_opt_", "plugin_opt_")
UNSUPPORTED_LOG_DESTS = frozenset({"syslog", "topic", "dlt"})
# mosquitto 1.x spellings of three bridge options; 2.0.11 still accepts them.
BRIDGE_ALIASES = {"clientid": "remote_clientid", "username": "remote_username", "password": "remote_password"}


class ConfigError(Exception):
    """The configuration cannot be used; the message starts with "file:line: " where it can."""


@dataclass
class ListenerConfig:
    port: int
    address: str | None = None  # None = all interfaces, as mosquitto


@dataclass
class BridgeTopic:
    pattern: str
    direction: str = "out"  # "in" | "out" | "both"
    qos: int = 0
    local_prefix: str = ""
    remote_prefix: str = ""


@dataclass
class BridgeConfig:
    name: str
    addresses: list[tuple[str, int]] = field(default_factory=list)
    topics: list[BridgeTopic] = field(default_factory=list)
    remote_clientid: str | None = None  # mosquitto's default is "HOSTNAME.NAME", filled in later
    local_clientid: str | None = None
    remote_username: str | None = None
    remote_password: str | None = None
    cleansession: bool = False
    keepalive_interval: int = 60
    restart_timeout: tuple[float, float] = (5.0, 30.0)  # (base, cap) of the reconnect backoff
    try_private: bool = True
    notifications: bool = True
    notification_topic: str | None = None  # None = $SYS/broker/connection/NAME/state


@dataclass
class Config:
    path: Path | None = None
    listeners: list[ListenerConfig] = field(default_factory=list)
    # mosquitto 2.0's "local only mode": no listener configured, so it listens on loopback only
    # and, unless allow_anonymous says otherwise, lets anonymous clients in.
    local_only: bool = False
    allow_anonymous: bool | None = None  # None = not set in the file
    password_file: Path | None = None
    acl_file: Path | None = None
    persistence: bool = False
    persistence_location: Path | None = None
    persistence_file: str = "mosquitto.db"
    autosave_interval: float = 1800
    max_connections: int = -1
    max_inflight_messages: int = 20
    max_queued_messages: int = 1000
    max_queued_bytes: int = 0
    message_size_limit: int = 0
    max_keepalive: int = 65535
    sys_interval: float = 10
    log_types: set[str] = field(default_factory=lambda: set(DEFAULT_LOG_TYPES))
    log_dest: list[tuple[str, Path | None]] = field(default_factory=lambda: [("stderr", None)])
    connection_messages: bool = True
    persistent_client_expiration: float | None = None  # seconds
    bridges: list[BridgeConfig] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def default(cls) -> Config:
        """What mosquitto 2.0 runs with when started without a config file."""
        return cls(listeners=[ListenerConfig(DEFAULT_PORT, "127.0.0.1")], local_only=True)

    @property
    def store_path(self) -> Path | None:
        if not self.persistence:
            return None
        return (self.persistence_location or Path()) / self.persistence_file

    def anonymous_allowed(self) -> bool:
        """mosquitto 2.0: an explicit allow_anonymous wins; otherwise only in local only mode."""
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return self.local_only


def load_config(path: str | Path) -> Config:
    """Read a mosquitto.conf (and the files its include_dir names) into a ``Config``."""
    path = Path(path)
    reader = _Reader(path)
    reader.read_file(path, is_main=True)
    return reader.finish()


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, slots=True)
class _Line:
    where: str  # "file:line", the prefix of every message about this line
    key: str
    args: list[str]
    rest: str  # everything after the key, for values that may contain spaces (paths, passwords)

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {message}")


def _split_line(text: str, where: str) -> _Line | None:
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    key, _, rest = text.partition(" ")
    rest = rest.strip()
    return _Line(where=where, key=key, args=rest.split(), rest=rest)


class _Reader:
    """Applies lines to a ``Config`` in file order, keeping the state mosquitto keeps."""

    def __init__(self, main_path: Path) -> None:
        self.config = Config(path=main_path)
        self._default_port: int | None = None
        self._default_address: str | None = None
        self._log_types_given = False
        self._log_dest_given = False
        self._bridge: BridgeConfig | None = None  # the open `connection` stanza of this file
        self._bridge_origin: dict[str, str] = {}  # bridge name -> "file:line" of its `connection`
        self._bridges_with_address: set[str] = set()
        self._handlers: dict[str, Callable[[_Line], None]] = {
            "listener": self._listener,
            "port": self._port,
            "bind_address": self._bind_address,
            "allow_anonymous": self._setter("allow_anonymous", _bool),
            "password_file": self._setter("password_file", _path),
            "acl_file": self._setter("acl_file", _path),
            "persistence": self._setter("persistence", _bool),
            "persistence_location": self._setter("persistence_location", _path),
            "persistence_file": self._setter("persistence_file", _string),
            "autosave_interval": self._setter("autosave_interval", _seconds),
            "max_connections": self._setter("max_connections", _int_at_least(None)),
            "max_inflight_messages": self._setter("max_inflight_messages", _int_at_least(0)),
            "max_queued_messages": self._setter("max_queued_messages", _int_at_least(0)),
            "max_queued_bytes": self._setter("max_queued_bytes", _int_at_least(0)),
            "message_size_limit": self._setter("message_size_limit", _int_between(0, MAX_PACKET_PAYLOAD)),
            "max_keepalive": self._setter("max_keepalive", _int_between(1, 65535)),
            "sys_interval": self._setter("sys_interval", _seconds),
            "log_type": self._log_type,
            "log_dest": self._log_dest,
            "connection_messages": self._setter("connection_messages", _bool),
            "persistent_client_expiration": self._setter("persistent_client_expiration", _duration),
            "connection": self._connection,
        }
        self._bridge_handlers: dict[str, Callable[[_Line, BridgeConfig], None]] = {
            "address": self._address,
            "addresses": self._address,
            "topic": self._topic,
            "remote_clientid": _bridge_setter("remote_clientid", _string),
            "local_clientid": _bridge_setter("local_clientid", _string),
            "remote_username": _bridge_setter("remote_username", _string),
            "remote_password": _bridge_setter("remote_password", _string),
            "cleansession": _bridge_setter("cleansession", _bool),
            "keepalive_interval": self._keepalive_interval,
            "restart_timeout": self._restart_timeout,
            "try_private": _bridge_setter("try_private", _bool),
            "notifications": _bridge_setter("notifications", _bool),
            "notification_topic": _bridge_setter("notification_topic", _topic_name),
        }

    def read_file(self, path: Path, *, is_main: bool) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config file: {_reason(exc)}") from None
        # A stanza never continues into or out of another file (checked: a `topic` line at the
        # top of an included file is "Invalid bridge configuration" in mosquitto 2.0.11).
        outer_bridge, self._bridge = self._bridge, None
        for number, raw in enumerate(text.split("\n"), start=1):
            line = _split_line(raw, f"{path}:{number}")
            if line is not None:
                self._apply(line, is_main=is_main)
        self._bridge = outer_bridge

    def finish(self) -> Config:
        config = self.config
        if self._default_port is not None or self._default_address is not None:
            # `port` and `bind_address` configure mosquitto's default listener.
            default = ListenerConfig(self._default_port or DEFAULT_PORT, self._default_address)
            config.listeners.insert(0, default)
        if not config.listeners:
            config.listeners.append(ListenerConfig(DEFAULT_PORT, "127.0.0.1"))
            config.local_only = True
        for bridge in config.bridges:
            self._check_bridge_complete(bridge)
        return config

    def _apply(self, line: _Line, *, is_main: bool) -> None:
        key = BRIDGE_ALIASES.get(line.key, line.key)
        if key == "include_dir":
            self._include_dir(line, is_main=is_main)
        elif key in self._handlers:
            self._handlers[key](line)
        elif key in self._bridge_handlers:
            if self._bridge is None:
                raise line.error(f"'{line.key}' is a bridge option, but no 'connection' is open in this file")
            self._bridge_handlers[key](line, self._bridge)
        elif key in UNSUPPORTED_KEYS or key.startswith(UNSUPPORTED_PREFIXES):
            self._warn(line, f"unsupported option '{line.key}' ignored")
        else:
            raise line.error(f"unknown configuration option '{line.key}'")

    def _warn(self, line: _Line, message: str) -> None:
        self.config.warnings.append(f"{line.where}: warning: {message}")

    def _setter(self, attribute: str, parse: Callable[[_Line], object]) -> Callable[[_Line], None]:
        def apply(line: _Line) -> None:
            setattr(self.config, attribute, parse(line))

        return apply

    # --- listeners ----------------------------------------------------------------------------

    def _listener(self, line: _Line) -> None:
        if not line.args:
            raise line.error("listener needs a port")
        if len(line.args) > 2:
            raise line.error("expected 'listener PORT [ADDRESS]'")
        port = _port_number(line.args[0], line)
        address = line.args[1] if len(line.args) == 2 else None
        self.config.listeners.append(ListenerConfig(port, address))

    def _port(self, line: _Line) -> None:
        self._default_port = _port_number(_single(line), line)

    def _bind_address(self, line: _Line) -> None:
        self._default_address = _single(line)

    # --- logging --------------------------------------------------------------------------------

    def _log_type(self, line: _Line) -> None:
        value = _single(line)
        if value not in LOG_TYPES | {"all", "none"}:
            raise line.error(f"invalid log_type {value!r}")
        if not self._log_types_given:
            # The first log_type replaces the defaults; later ones add to it.
            self.config.log_types.clear()
            self._log_types_given = True
        if value == "all":
            self.config.log_types.update(LOG_TYPES)
        elif value != "none":
            self.config.log_types.add(value)

    def _log_dest(self, line: _Line) -> None:
        if not line.args:
            raise line.error("log_dest needs a destination")
        kind = line.args[0]
        if kind not in ("stdout", "stderr", "file", "none") and kind not in UNSUPPORTED_LOG_DESTS:
            raise line.error(f"invalid log_dest {kind!r}")
        if not self._log_dest_given:
            self.config.log_dest.clear()
            self._log_dest_given = True
        destinations = self.config.log_dest
        if kind in ("stdout", "stderr"):
            if (kind, None) not in destinations:
                destinations.append((kind, None))
        elif kind == "file":
            # The path is the rest of the line, so it may contain spaces; one log file at most.
            file_path = line.rest[len("file") :].strip()
            if not file_path:
                raise line.error("'log_dest file' needs a path")
            destinations[:] = [dest for dest in destinations if dest[0] != "file"]
            destinations.append(("file", Path(file_path)))
        elif kind in UNSUPPORTED_LOG_DESTS:
            self._warn(line, f"unsupported option 'log_dest {kind}' ignored")

    # --- include_dir ----------------------------------------------------------------------------

    def _include_dir(self, line: _Line, *, is_main: bool) -> None:
        if not is_main:
            # mosquitto ignores include_dir in an included file without a word; say so.
            self._warn(line, "include_dir is only read from the main config file; ignored")
            return
        directory = _path(line)
        try:
            with os.scandir(directory) as entries:
                names = [entry.name for entry in entries if entry.name.endswith(".conf") and entry.is_file()]
        except OSError as exc:
            raise line.error(f"cannot open include_dir {str(directory)!r}: {_reason(exc)}") from None
        for name in sorted(names, key=mosquitto_sort_key):
            self.read_file(directory / name, is_main=False)

    # --- bridges --------------------------------------------------------------------------------

    def _connection(self, line: _Line) -> None:
        name = _single(line)
        if name in self._bridge_origin:
            raise line.error(f"duplicate bridge name {name!r}")
        self._bridge = BridgeConfig(name=name)
        self._bridge_origin[name] = line.where
        self.config.bridges.append(self._bridge)

    def _address(self, line: _Line, bridge: BridgeConfig) -> None:
        if not line.args:
            raise line.error(f"{line.key} needs at least one host[:port]")
        if bridge.name in self._bridges_with_address:
            # mosquitto refuses a second address/addresses line; list them all on one line.
            raise line.error(f"bridge {bridge.name!r} already has its addresses")
        bridge.addresses = [_host_port(token, line) for token in line.args]
        self._bridges_with_address.add(bridge.name)

    def _topic(self, line: _Line, bridge: BridgeConfig) -> None:
        bridge.topics.append(_bridge_topic(line))

    def _keepalive_interval(self, line: _Line, bridge: BridgeConfig) -> None:
        seconds = _int_at_least(0)(line)
        if seconds < BRIDGE_MIN_KEEPALIVE:
            self._warn(line, f"keepalive_interval too low, using {BRIDGE_MIN_KEEPALIVE} seconds")
            seconds = BRIDGE_MIN_KEEPALIVE
        bridge.keepalive_interval = seconds

    def _restart_timeout(self, line: _Line, bridge: BridgeConfig) -> None:
        if len(line.args) not in (1, 2):
            raise line.error("expected 'restart_timeout SECONDS' or 'restart_timeout BASE CAP'")
        values = [_nonnegative_number(token, line) for token in line.args]
        if len(values) == 2 and values[1] < values[0]:
            raise line.error("restart_timeout cap is lower than its base")
        if values[0] < BRIDGE_MIN_RESTART:
            self._warn(line, f"restart_timeout too low, using {BRIDGE_MIN_RESTART:g} second")
            values = [max(value, BRIDGE_MIN_RESTART) for value in values]
        # One value is a constant delay: a backoff whose base and cap are equal.
        bridge.restart_timeout = (values[0], values[-1])

    def _check_bridge_complete(self, bridge: BridgeConfig) -> None:
        where = self._bridge_origin[bridge.name]
        if not bridge.addresses:
            raise ConfigError(f"{where}: bridge {bridge.name!r} has no address")
        if not bridge.topics:
            raise ConfigError(f"{where}: bridge {bridge.name!r} has no topic")


def _bridge_setter(attribute: str, parse: Callable[[_Line], object]) -> Callable[[_Line, BridgeConfig], None]:
    def apply(line: _Line, bridge: BridgeConfig) -> None:
        setattr(bridge, attribute, parse(line))

    return apply


def mosquitto_sort_key(name: str) -> list[tuple[str, bool]]:
    """include_dir order: alphabetical, an upper-case letter just before its lower case.

    So 00.conf, 01.conf, A.conf, a.conf, B.conf, b.conf (the mosquitto.conf(5) example, and
    what mosquitto 2.0.11 does); plain ``sorted`` would put B.conf before a.conf.
    """
    return [(char.lower(), char.islower()) for char in name]


# ---------------------------------------------------------------------------------------------
# Values. Each parser takes the whole line so that its error can name file, line and key.


def _single(line: _Line) -> str:
    if not line.args:
        raise line.error(f"{line.key} needs a value")
    if len(line.args) > 1:
        raise line.error(f"{line.key} takes one value, got {len(line.args)}")
    return line.args[0]


def _string(line: _Line) -> str:
    # The rest of the line, as mosquitto takes it: a path or password may contain spaces.
    if not line.rest:
        raise line.error(f"{line.key} needs a value")
    return line.rest


def _path(line: _Line) -> Path:
    return Path(_string(line))


def _topic_name(line: _Line) -> str:
    topic = _string(line)
    try:
        return validate_topic_name(topic)
    except ProtocolError as exc:
        raise line.error(f"invalid {line.key} {topic!r}: {exc}") from None


def _bool(line: _Line) -> bool:
    # mosquitto accepts exactly these four spellings; "yes" or "True" is an error.
    value = _single(line)
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise line.error(f"invalid {line.key} value {value!r} (expected true or false)")


_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
_DURATION = re.compile(r"([0-9]+)([hdwmy])")


def _parse_int(text: str, line: _Line) -> int:
    if not _INT.fullmatch(text):
        raise line.error(f"invalid {line.key} value {text!r} (expected an integer)")
    return int(text)


def _int_at_least(minimum: int | None) -> Callable[[_Line], int]:
    def parse(line: _Line) -> int:
        value = _parse_int(_single(line), line)
        if minimum is not None and value < minimum:
            raise line.error(f"{line.key} must be at least {minimum}, got {value}")
        return value

    return parse


def _int_between(low: int, high: int) -> Callable[[_Line], int]:
    def parse(line: _Line) -> int:
        value = _parse_int(_single(line), line)
        if not low <= value <= high:
            raise line.error(f"{line.key} must be between {low} and {high}, got {value}")
        return value

    return parse


def _nonnegative_number(text: str, line: _Line) -> float:
    if not _NUMBER.fullmatch(text):
        raise line.error(f"invalid {line.key} value {text!r} (expected a number of seconds)")
    return float(text)


def _seconds(line: _Line) -> float:
    return _nonnegative_number(_single(line), line)


def _duration(line: _Line) -> float:
    """mosquitto's "1h", "2d", "3w", "1m" (30 days), "1y" (365 days); a bare number is invalid."""
    text = _single(line)
    match = _DURATION.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise line.error(f"invalid {line.key} {text!r} (expected e.g. 1h, 2d, 3w, 1m or 1y)")
    return float(int(match.group(1)) * DURATION_UNITS[match.group(2)])


def _port_number(text: str, line: _Line) -> int:
    # mosquitto's port 0 means a Unix socket, which this broker does not offer.
    port = _parse_int(text, line)
    if not 1 <= port <= 65535:
        raise line.error(f"invalid port {text!r} (expected 1-65535)")
    return port


def _host_port(token: str, line: _Line) -> tuple[str, int]:
    host, colon, port = token.partition(":")
    if ":" in port:
        raise line.error(f"cannot read host[:port] from {token!r} (IPv6 addresses are not supported)")
    if not host:
        raise line.error(f"missing host in {token!r}")
    return host, (_port_number(port, line) if colon else DEFAULT_PORT)


def _bridge_topic(line: _Line) -> BridgeTopic:
    """``topic PATTERN [in|out|both] [QOS] [LOCAL_PREFIX [REMOTE_PREFIX]]``; ``""`` is empty."""
    fields = ["" if token == '""' else token for token in line.args]
    if not fields:
        raise line.error("topic needs a pattern")
    if len(fields) > 5:
        raise line.error("expected 'topic PATTERN [in|out|both] [QOS] [LOCAL_PREFIX REMOTE_PREFIX]'")
    pattern, direction, qos, local_prefix, remote_prefix = fields + [None] * (5 - len(fields))
    topic = BridgeTopic(pattern=pattern or "")
    if direction is not None:
        if direction not in ("in", "out", "both"):
            raise line.error(f"invalid bridge topic direction {direction!r} (in, out or both)")
        topic.direction = direction
    if qos is not None:
        if qos not in ("0", "1", "2"):
            raise line.error(f"invalid bridge topic QoS {qos!r} (0, 1 or 2)")
        topic.qos = int(qos)
    topic.local_prefix = _prefix(local_prefix or "", "local", line)
    topic.remote_prefix = _prefix(remote_prefix or "", "remote", line)
    _check_bridge_pattern(topic, line)
    return topic


def _prefix(prefix: str, which: str, line: _Line) -> str:
    if "+" in prefix or "#" in prefix:
        raise line.error(f"invalid bridge topic {which} prefix {prefix!r}: no wildcards allowed")
    return prefix


def _check_bridge_pattern(topic: BridgeTopic, line: _Line) -> None:
    if not topic.pattern:
        # An empty pattern maps exactly one topic, the prefix itself, so a prefix is required.
        if not (topic.local_prefix or topic.remote_prefix):
            raise line.error('an empty ("") bridge topic pattern needs a local or remote prefix')
        return
    try:
        validate_filter(topic.pattern)
    except ProtocolError as exc:
        raise line.error(f"invalid bridge topic pattern {topic.pattern!r}: {exc}") from None


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
