"""mosquitto's ACL file: which client may read and write which topics.

The file is a list of rules, read top to bottom::

    topic read public/#            # before any `user` line: rules for anonymous clients
    pattern readwrite devices/%c/# # every client; %c = its client id, %u = its username
    user alice                     # the `topic` lines below belong to alice
    topic readwrite alice/#
    topic deny alice/secret

The access word is optional (default ``readwrite``) and ``deny`` beats any grant. A client
gets its own section's ``topic`` rules (or the anonymous section's, without a username) plus
every ``pattern``, and is refused whatever no rule grants.

Publishing and delivery check a topic *name* against the rules. A SUBSCRIBE carries a
*filter*, which needs two filter-against-filter questions instead: can any topic match both
(``filters_intersect``), and does one filter match everything the other does
(``filter_covers``)? A filter that only partly overlaps the rules is granted; the broker then
asks ``may_read`` for each message it would deliver, so nothing outside the rules leaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mqtt.errors import ProtocolError
from mqtt.topics import validate_filter

ACCESS_WORDS = ("read", "write", "readwrite", "deny")
DEFAULT_ACCESS = "readwrite"
READ_GRANTS = ("read", "readwrite")
WRITE_GRANTS = ("write", "readwrite")

# A substituted value must stay inside one topic level, or a client could widen its own rule:
# client id "x/#" would turn "devices/%c" into "devices/x/#". mosquitto 2.0.11 refuses ids with
# '+' or '#'; '/' is refused here as well because id "a/b" would otherwise reach into the
# subtree of the client called "a". An empty value would collapse the level and is refused too.
_UNSAFE_IN_SUBSTITUTION = re.compile(r"[+#/]")
_PLACEHOLDER = re.compile(r"%[cu]")


class AclFileError(Exception):
    """The ACL file cannot be read or has a malformed line; the message names path and line."""


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ``topic`` or ``pattern`` line; a pattern's filter still contains %c / %u."""

    access: str
    topic_filter: str
    line: int


@dataclass
class AclFile:
    """One ACL file's rules by section: anonymous, per user, and the patterns for everyone."""

    path: Path | None = None
    anonymous_rules: list[AclRule] = field(default_factory=list)
    user_rules: dict[str, list[AclRule]] = field(default_factory=dict)
    patterns: list[AclRule] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> AclFile:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AclFileError(f"{path}: cannot read ACL file: {exc}") from exc
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path | None = None) -> AclFile:
        acl = cls(path=path)
        current_user: str | None = None
        # split("\n"), not splitlines(): the latter also breaks on form feeds and the like,
        # and the line numbers in error messages must agree with an editor's.
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path or '<acl>'}:{number}"
            keyword, _, rest = line.partition(" ")
            rest = rest.strip()
            if keyword == "user":
                current_user = _parse_username(rest, where)
                acl.user_rules.setdefault(current_user, [])
            elif keyword == "topic":
                rule = _parse_rule(rest, number, where, is_pattern=False)
                acl._rules_of(current_user).append(rule)
            elif keyword == "pattern":
                # Patterns apply to every client wherever they appear, as in mosquitto.
                acl.patterns.append(_parse_rule(rest, number, where, is_pattern=True))
            else:
                raise AclFileError(f"{where}: invalid line: unknown keyword {keyword!r}")
        return acl

    @property
    def rule_count(self) -> int:
        """How many rules the file holds, patterns included.

        A property rather than ``__len__``: an empty ACL file still denies everything, so a
        loaded ``AclFile`` must never test false.
        """
        per_user = sum(len(rules) for rules in self.user_rules.values())
        return len(self.anonymous_rules) + per_user + len(self.patterns)

    def rules_for(self, client_id: str, username: str | None) -> list[tuple[str, str]]:
        """``(access, filter)`` for every rule that applies to this client, patterns filled in."""
        own = self.anonymous_rules if username is None else self.user_rules.get(username, [])
        rules = [(rule.access, rule.topic_filter) for rule in own]
        for pattern in self.patterns:
            topic_filter = substitute(pattern.topic_filter, client_id, username)
            if topic_filter is not None:
                rules.append((pattern.access, topic_filter))
        return rules

    def may_read(self, client_id: str, username: str | None, topic: str) -> bool:
        return self._may_access(client_id, username, topic, READ_GRANTS)

    def may_write(self, client_id: str, username: str | None, topic: str) -> bool:
        return self._may_access(client_id, username, topic, WRITE_GRANTS)

    def may_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        """Refuse a filter wholly inside a deny rule or outside every read rule.

        Anything in between is granted; ``may_read`` then filters each delivery. (mosquitto
        2.0.11 grants every SUBSCRIBE and relies on the delivery check alone; refusing a
        hopeless filter up front tells the client at once, with SUBACK 0x80.)
        """
        rules = self.rules_for(client_id, username)
        if any(access == "deny" and filter_covers(rule, topic_filter) for access, rule in rules):
            return False
        return any(access in READ_GRANTS and filters_intersect(rule, topic_filter) for access, rule in rules)

    def _may_access(
        self, client_id: str, username: str | None, topic: str, granting: tuple[str, ...]
    ) -> bool:
        # Every deny is checked before any grant, so a deny anywhere in the client's rules wins.
        rules = self.rules_for(client_id, username)
        if any(access == "deny" and topic_matches(rule, topic) for access, rule in rules):
            return False
        return any(access in granting and topic_matches(rule, topic) for access, rule in rules)

    def _rules_of(self, username: str | None) -> list[AclRule]:
        return self.anonymous_rules if username is None else self.user_rules[username]


def _parse_username(rest: str, where: str) -> str:
    # The rest of the line is the name, so usernames may contain spaces (as in mosquitto).
    if not rest:
        raise AclFileError(f"{where}: missing username after 'user'")
    return rest


def _parse_rule(rest: str, number: int, where: str, *, is_pattern: bool) -> AclRule:
    """``[ACCESS] FILTER``: with one word it is the filter; with more, the first is the access."""
    if not rest:
        raise AclFileError(f"{where}: missing topic")
    first, _, remainder = rest.partition(" ")
    remainder = remainder.strip()
    if not remainder:
        access, topic_filter = DEFAULT_ACCESS, first
    elif first in ACCESS_WORDS:
        # The filter is the rest of the line, which is how a topic containing spaces is written.
        access, topic_filter = first, remainder
    else:
        raise AclFileError(f"{where}: invalid access type {first!r} (read, write, readwrite or deny)")
    _check_filter(topic_filter, where, is_pattern=is_pattern)
    return AclRule(access=access, topic_filter=topic_filter, line=number)


def _check_filter(topic_filter: str, where: str, *, is_pattern: bool) -> None:
    # A pattern is checked as it will look once a safe client id or username is put in.
    candidate = _PLACEHOLDER.sub("x", topic_filter) if is_pattern else topic_filter
    try:
        validate_filter(candidate)
    except ProtocolError as exc:
        raise AclFileError(f"{where}: invalid ACL topic {topic_filter!r}: {exc}") from exc


def substitute(pattern: str, client_id: str, username: str | None) -> str | None:
    """Fill %c and %u in; None when the pattern cannot apply to this client.

    One pass over the placeholders, so a client id that itself contains "%u" is not expanded.
    """
    if "%u" in pattern and not _safe_to_substitute(username):
        return None  # also a client without a username: %u cannot stand for nobody
    if "%c" in pattern and not _safe_to_substitute(client_id):
        return None
    values = {"%c": client_id, "%u": username or ""}
    return _PLACEHOLDER.sub(lambda match: values[match.group()], pattern)


def _safe_to_substitute(value: str | None) -> bool:
    return bool(value) and _UNSAFE_IN_SUBSTITUTION.search(value or "") is None


# ---------------------------------------------------------------------------------------------
# Filters against filters. Both helpers walk the two filters level by level; a topic *name*
# is a filter that matches only itself, so one helper also serves for topic matching.


def filters_intersect(a: str, b: str) -> bool:
    """Whether some topic name matches both filters."""
    levels_a, levels_b = a.split("/"), b.split("/")
    for depth in range(max(len(levels_a), len(levels_b))):
        level_a = levels_a[depth] if depth < len(levels_a) else None
        level_b = levels_b[depth] if depth < len(levels_b) else None
        if level_a == "#" or level_b == "#":
            # '#' takes whatever is left, even nothing ("a/#" matches "a"), except that at the
            # first level it never takes a $-topic [MQTT-4.7.2-1].
            other = level_b if level_a == "#" else level_a
            return not (depth == 0 and _is_dollar_literal(other))
        if level_a is None or level_b is None:
            return False  # one filter has ended; the other still needs a level
        if level_a == "+" or level_b == "+":
            other = level_b if level_a == "+" else level_a
            if depth == 0 and _is_dollar_literal(other):
                return False
            continue
        if level_a != level_b:
            return False
    return True


def filter_covers(wide: str, narrow: str) -> bool:
    """Whether every topic name that ``narrow`` matches is also matched by ``wide``."""
    wide_levels, narrow_levels = wide.split("/"), narrow.split("/")
    for depth, wide_level in enumerate(wide_levels):
        if wide_level == "#":
            # Everything below, and the parent itself; only $-topics escape a first-level '#'.
            return not (depth == 0 and _is_dollar_literal(narrow_levels[0]))
        if depth >= len(narrow_levels):
            return False  # narrow matches a shorter topic than wide accepts
        narrow_level = narrow_levels[depth]
        if narrow_level == "#":
            # narrow spans any number of levels from here, which only '#' covers. The exception
            # is the first level: a topic has at least one, so "+/#" is as wide as "#" there.
            return depth == 0 and wide_levels == ["+", "#"]
        if wide_level == "+":
            if depth == 0 and _is_dollar_literal(narrow_level):
                return False
            continue
        if wide_level != narrow_level:
            return False  # a literal covers only the same literal, never '+'
    return len(narrow_levels) == len(wide_levels)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic_filter`` matches the topic name ``topic``."""
    return filter_covers(topic_filter, topic)


def _is_dollar_literal(level: str | None) -> bool:
    return level is not None and level not in ("+", "#") and level.startswith("$")
