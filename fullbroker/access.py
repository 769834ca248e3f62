"""``FilePolicy``: the core's ``Policy`` hooks answered from mosquitto's password and ACL files.

Authentication follows mosquitto 2.0.11, checked against the real broker:

* no username: accepted only when anonymous clients are allowed;
* a password file is configured: the username must be in it and the password must match;
  ``allow_anonymous`` does not soften that (a wrong password is refused even when anonymous
  clients are welcome);
* no password file: the username is not checked at all, so ``allow_anonymous`` alone decides,
  for clients with and without a username alike.

Every refusal is CONNACK 5, "not authorised", as mosquitto answers MQTT 3.1.1 clients.

Without an ACL file every topic is open. ``may_read`` runs once per delivery, so its answers
are cached; the cache is bounded and thrown away when the files are reloaded (SIGHUP).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mqtt.packets import ConnackCode, Connect
from mqtt.policy import Policy

from .acl import AclFile, AclFileError
from .passwords import PasswordFile, PasswordFileError

READ_CACHE_LIMIT = 100_000


@dataclass(frozen=True)
class _Rules:
    """Everything a reload replaces, held together so that one assignment swaps it all.

    A worker thread that picked up the old set mid-check finishes with a consistent one, and
    the new cache can never receive an answer computed from the old ACL.
    """

    passwords: PasswordFile | None
    acl: AclFile | None
    read_cache: dict[tuple[str, str | None, str], bool] = field(default_factory=dict)


class FilePolicy(Policy):
    """The core's Policy, answered from a password file and an ACL file (either may be None)."""

    def __init__(
        self,
        allow_anonymous: bool,
        password_file: Path | None,
        acl_file: Path | None,
        log: logging.Logger,
    ) -> None:
        self.allow_anonymous = allow_anonymous
        self.password_file = password_file
        self.acl_file = acl_file
        self._log = log
        # Loading at construction lets a broken file stop the broker before it listens.
        self._rules = _load_rules(password_file, acl_file)

    def authenticate(self, connect: Connect) -> int:
        passwords = self._rules.passwords
        if connect.username is None or passwords is None:
            return ConnackCode.ACCEPTED if self.allow_anonymous else ConnackCode.NOT_AUTHORIZED
        if passwords.verify(connect.username, connect.password):
            return ConnackCode.ACCEPTED
        # Name the user, never the password, not even a wrong one: it may be a real password
        # typed into the wrong username field.
        self._log.debug("refused %r: unknown user or wrong password", connect.username)
        return ConnackCode.NOT_AUTHORIZED

    def may_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        acl = self._rules.acl
        return acl is None or acl.may_subscribe(client_id, username, topic_filter)

    def may_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        # $SYS is guarded by the core, which refuses client publishes there with or without an ACL.
        acl = self._rules.acl
        return acl is None or acl.may_write(client_id, username, topic)

    def may_read(self, client_id: str, username: str | None, topic: str) -> bool:
        rules = self._rules  # read once: a reload between two reads would mix old and new
        acl, cache = rules.acl, rules.read_cache
        if acl is None:
            return True
        key = (client_id, username, topic)
        allowed = cache.get(key)
        if allowed is None:
            if len(cache) >= READ_CACHE_LIMIT:
                cache.clear()  # crude but bounded; a busy broker refills it with what is hot
            allowed = cache[key] = acl.may_read(client_id, username, topic)
        return allowed

    def reload(self) -> None:
        """Re-read both files; if either is broken, keep all the old rules and say why."""
        try:
            rules = _load_rules(self.password_file, self.acl_file)
        except (PasswordFileError, AclFileError) as exc:
            # The message names file and line; the old rules stay, so one bad edit does not
            # lock everybody out (or let everybody in).
            self._log.error("reload failed, keeping the previous rules: %s", exc)
            return
        self._rules = rules  # with an empty cache: no answer from the old rules survives
        self._log.info("%s", _describe(rules))


def _load_rules(password_file: Path | None, acl_file: Path | None) -> _Rules:
    passwords = None if password_file is None else PasswordFile.load(password_file)
    acl = None if acl_file is None else AclFile.load(acl_file)
    return _Rules(passwords, acl)


def _describe(rules: _Rules) -> str:
    parts = []
    if rules.passwords is not None:
        parts.append(f"password file ({len(rules.passwords)} users)")
    if rules.acl is not None:
        parts.append(f"ACL file ({rules.acl.rule_count} rules)")
    return "reloaded " + (" and ".join(parts) if parts else "nothing: no password or ACL file configured")
