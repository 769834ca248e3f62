"""The full broker's command line: mosquitto's ``-c FILE``, ``-p PORT`` and ``-v``, plus every
flag the variants share. Flags given explicitly win over the config file; the file wins over
the flags' defaults. Without ``-c`` the broker runs as mosquitto 2.0 does without a config:
on 127.0.0.1:1883 only, anonymous clients allowed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from servers.common import Shutdown, build_parser, install_stop_signals, limits_from_args

from .acl import AclFileError
from .broker_log import configure_logging
from .config import Config, ConfigError, load_config
from .passwords import PasswordFileError
from .server import StoreInUse, limits_from_config

log = logging.getLogger("broker")


def parse_args(description: str, argv: list[str] | None) -> tuple[argparse.Namespace, set[str]]:
    """The flags, and the names of those given explicitly (they override the config file)."""
    parser = build_parser(description)
    parser.add_argument("-c", "--config-file", help="read a mosquitto.conf")
    parser.add_argument("-p", dest="port", type=int, help="same as --port, as mosquitto spells it")
    args = parser.parse_args(argv)
    explicit = {name for name, value in vars(args).items() if value != parser.get_default(name)}
    return args, explicit


def read_config(path: str | None) -> Config:
    return load_config(path) if path else Config.default()


def main(server_class: type, description: str, argv: list[str] | None = None) -> int:
    args, explicit = parse_args(description, argv)
    try:
        config = read_config(args.config_file)
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 3  # mosquitto's exit status for a bad configuration
    configure_logging(config.log_dest, config.log_types, args.verbose)
    for warning in config.warnings:
        log.warning(warning)
    first = config.listeners[0] if config.listeners else Config.default().listeners[0]
    if "port" not in explicit:
        args.port = first.port
    if "host" not in explicit:
        args.host = first.address or "0.0.0.0"  # mosquitto's "listener PORT": every interface
    if "max_connections" in explicit:  # the full broker counts sockets at accept, as mosquitto
        config.max_connections = args.max_connections or -1
    limits = limits_from_config(config, limits_from_args(args), explicit)
    install_stop_signals()
    try:
        server = server_class(args, config, limits)
    except Shutdown:
        return 0  # stopped while still starting
    except (PasswordFileError, AclFileError, StoreInUse) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 3  # a file the config names cannot be used: as a bad configuration
    return server.run()
