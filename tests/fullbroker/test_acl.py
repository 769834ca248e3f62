"""mosquitto ACL files: parsing, matching, the subscribe check, and FilePolicy's authorisation.

The filter-against-filter helpers are checked twice: by tables of the edge cases, then against
a brute-force model that enumerates every small filter and topic over a tiny alphabet and asks
the core's own subscription trie which topics each filter matches. The ACL behaviours marked
"mosquitto 2.0.11" were observed on the real broker with mosquitto_sub and mosquitto_pub.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from fullbroker import access
from fullbroker.access import FilePolicy
from fullbroker.acl import AclFile, AclFileError, filter_covers, filters_intersect, substitute, topic_matches
from mqtt.topics import SubscriptionTrie

# ---------------------------------------------------------------------------------------------
# Filters against filters


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/#", "a", True),  # '#' also matches the parent level
        ("a", "a/#", True),
        ("a/+", "a", False),  # '+' needs a level to be there
        ("+/+", "a/#", True),  # "a/x"
        ("+/+", "a/b/c", False),
        ("+", "a/#", True),  # "a"
        ("#", "$SYS/x", False),  # [MQTT-4.7.2-1]
        ("+/x", "$SYS/x", False),
        ("#", "+/x", True),
        ("$SYS/#", "$SYS/broker/+", True),
        ("$SYS/#", "#", False),  # '#' never reaches $SYS, so nothing is in both
        ("$SYS/#", "+/#", False),
        ("a/+/c", "a/b/+", True),  # "a/b/c"
        ("a/+/c", "a/b/d", False),
        ("a//b", "a/+/b", True),  # an empty level is still a level
        ("/#", "+/x", True),  # "/x"
        ("a/b/#", "a/#", True),
        ("x", "y/#", False),
    ],
)
def test_filters_intersect(a: str, b: str, expected: bool) -> None:
    assert filters_intersect(a, b) is expected
    assert filters_intersect(b, a) is expected  # symmetric by definition


@pytest.mark.parametrize(
    ("wide", "narrow", "expected"),
    [
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a/+/c", True),
        ("a", "a/#", False),  # narrow also matches "a/x"
        ("a/+", "a/#", False),  # narrow matches "a" and "a/x/y"
        ("+/+", "a/#", False),
        ("a/#", "+/+", False),  # "b/x"
        ("+/+", "a/b", True),
        ("+/+", "+/+", True),
        ("a/+", "a/b", True),
        ("a/b", "a/+", False),  # a literal never covers '+'
        ("#", "#", True),
        ("#", "a/#", True),
        ("#", "+/x", True),
        ("#", "$SYS/x", False),  # [MQTT-4.7.2-1]
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("$SYS/#", "$SYS", True),
        ("a/+/#", "a/#", False),  # narrow matches "a", wide does not
        ("a/#", "a/+/#", True),
        ("a/b/#", "a/#", False),
        ("+", "#", False),
        ("+/#", "#", True),  # a topic has at least one level, so these two are equal
        ("#", "+/#", True),
        ("+/+/#", "#", False),  # "a" has one level only
        ("#", "", True),  # the empty-string topic sits at the first level, no '$'
    ],
)
def test_filter_covers(wide: str, narrow: str, expected: bool) -> None:
    assert filter_covers(wide, narrow) is expected


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sport/tennis/#", "sport/tennis", True),
        ("sport/tennis/#", "sport/tennis/player1/ranking", True),
        ("sport/+", "sport/", True),  # spec 4.7.1.3: "sport/" has an empty second level
        ("sport/+", "sport", False),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("#", "$SYS/uptime", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_topic_matches_the_spec_examples(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


# A brute-force model, exhaustive: every filter of up to three levels over a small alphabet
# (with and without a trailing '#'), against every topic of up to five levels. "z" stands for
# any literal the filters do not mention, "$s" for a $-topic's first level; five levels are
# more than any of these filters can tell apart, so the model is exact.
_LEVELS = ["a", "$s", ""]
_UNIVERSE = [
    "/".join(levels) for depth in range(1, 6) for levels in itertools.product([*_LEVELS, "z"], repeat=depth)
]
_FILTERS = ["#"] + [
    "/".join(levels) + suffix
    for depth in range(1, 4)
    for levels in itertools.product([*_LEVELS, "+"], repeat=depth)
    for suffix in ("", "/#")
]


@pytest.fixture(scope="module")
def matched_topics() -> dict[str, frozenset[str]]:
    """What each filter matches, according to the core's own subscription trie (an oracle
    written independently of fullbroker.acl)."""
    matched = {}
    for topic_filter in _FILTERS:
        trie = SubscriptionTrie()
        trie.add(topic_filter, "me", 0)
        matched[topic_filter] = frozenset(topic for topic in _UNIVERSE if trie.match(topic))
    return matched


def test_filters_intersect_agrees_with_brute_force(matched_topics: dict[str, frozenset[str]]) -> None:
    wrong = [
        (a, b)
        for a, b in itertools.product(_FILTERS, repeat=2)
        if filters_intersect(a, b) != bool(matched_topics[a] & matched_topics[b])
    ]
    assert wrong == []


def test_filter_covers_agrees_with_brute_force(matched_topics: dict[str, frozenset[str]]) -> None:
    wrong = [
        (wide, narrow)
        for wide, narrow in itertools.product(_FILTERS, repeat=2)
        if filter_covers(wide, narrow) != (matched_topics[narrow] <= matched_topics[wide])
    ]
    assert wrong == []


def test_the_brute_force_model_is_not_trivial(matched_topics: dict[str, frozenset[str]]) -> None:
    assert len(_FILTERS) == 169
    assert "$s/a" not in matched_topics["#"] and "$s/a" in matched_topics["$s/#"]
    assert "a" in matched_topics["a/#"] and "a" not in matched_topics["a/+"]


# ---------------------------------------------------------------------------------------------
# Parsing

EXAMPLE = """\
# rules before any `user` line are for anonymous clients (mosquitto 2.0.11)
topic read public/#
topic deny public/private

pattern readwrite devices/%c/#
pattern read users/%u/inbox/#
pattern deny users/%u/inbox/spam

user alice
topic readwrite home/#
topic deny home/safe
topic read $SYS/broker/#

user bob
topic write home/#
topic read sensors/#

user carol smith
topic read spaced topic/x
"""


@pytest.fixture
def acl() -> AclFile:
    return AclFile.parse(EXAMPLE, Path("acl"))


def test_the_example_parses_into_sections(acl: AclFile) -> None:
    assert [(rule.access, rule.topic_filter) for rule in acl.anonymous_rules] == [
        ("read", "public/#"),
        ("deny", "public/private"),
    ]
    assert set(acl.user_rules) == {"alice", "bob", "carol smith"}
    assert [rule.line for rule in acl.user_rules["alice"]] == [10, 11, 12]
    assert len(acl.patterns) == 3
    assert acl.rule_count == 2 + 3 + 3 + 2 + 1


READ_CASES = [
    # client id, username, topic, may read
    ("anon", None, "public/news", True),
    ("anon", None, "public/private", False),  # deny beats the broader grant
    ("anon", None, "home/x", False),  # nothing grants it: refused by default
    ("x", "alice", "public/news", False),  # anonymous rules are not everybody's rules
    ("x", "alice", "home/kitchen", True),
    ("x", "alice", "home/safe", False),
    ("x", "alice", "home/safe/inner", True),  # a deny of "home/safe" is not "home/safe/#"
    ("x", "alice", "$SYS/broker/uptime", True),
    ("x", "bob", "home/kitchen", False),  # write-only
    ("x", "bob", "sensors/t", True),
    ("x", "mallory", "home/kitchen", False),  # a username without a section: patterns only
    ("x", "carol smith", "spaced topic/x", True),
    ("phone", "alice", "devices/phone/battery", True),  # %c
    ("phone", "alice", "devices/laptop/battery", False),
    ("phone", None, "devices/phone/battery", True),  # %c works for anonymous clients too
    ("x", "bob", "users/bob/inbox/1", True),  # %u
    ("x", "bob", "users/alice/inbox/1", False),
    ("x", "bob", "users/bob/inbox/spam", False),  # pattern deny
    ("x", None, "users//inbox/1", False),  # %u never matches a client without a username
]


@pytest.mark.parametrize(("client_id", "username", "topic", "expected"), READ_CASES)
def test_may_read(acl: AclFile, client_id: str, username: str | None, topic: str, expected: bool) -> None:
    assert acl.may_read(client_id, username, topic) is expected


@pytest.mark.parametrize(
    ("client_id", "username", "topic", "expected"),
    [
        ("anon", None, "public/news", False),  # read-only
        ("x", "alice", "home/kitchen", True),
        ("x", "alice", "home/safe", False),  # deny covers writing too
        ("x", "alice", "$SYS/broker/uptime", False),
        ("x", "bob", "home/kitchen", True),
        ("x", "bob", "sensors/t", False),
        ("phone", None, "devices/phone/cmd", True),
        ("x", "bob", "users/bob/inbox/1", False),  # that pattern is read-only
    ],
)
def test_may_write(acl: AclFile, client_id: str, username: str | None, topic: str, expected: bool) -> None:
    assert acl.may_write(client_id, username, topic) is expected


@pytest.mark.parametrize(
    ("client_id", "username", "topic_filter", "expected"),
    [
        ("x", "alice", "home/#", True),
        ("x", "alice", "home/+", True),
        ("x", "alice", "#", True),  # broader than the rules: granted, filtered per delivery
        ("x", "alice", "+/kitchen", True),
        ("x", "alice", "home/safe", False),  # wholly inside the deny
        ("x", "alice", "garden/#", False),  # no read rule can match anything it matches
        ("x", "alice", "$SYS/#", True),
        ("x", "alice", "$SYS/broker/load/+", True),
        ("x", "bob", "$SYS/#", False),
        ("x", "bob", "home/#", False),  # bob may write home/# but not read it
        ("anon", None, "public/private", False),
        ("anon", None, "public/+", True),  # public/news is readable
        ("x", "bob", "users/bob/inbox/spam", False),
        ("x", "bob", "users/+/inbox/#", True),  # meets users/bob/inbox/#
        ("x", "bob", "users/alice/#", False),
        ("laptop", "alice", "devices/phone/#", False),
        ("laptop", "alice", "devices/+/#", True),
    ],
)
def test_may_subscribe(
    acl: AclFile, client_id: str, username: str | None, topic_filter: str, expected: bool
) -> None:
    assert acl.may_subscribe(client_id, username, topic_filter) is expected


def test_a_deny_anywhere_in_the_clients_rules_wins_over_a_grant_elsewhere() -> None:
    # Deliberately stricter than mosquitto 2.0.11, which lets alice's own `topic` grant win
    # before it reaches the pattern deny: here "deny" means deny wherever it is written.
    acl = AclFile.parse("pattern deny a/%u/x\nuser alice\ntopic read a/#\n")
    assert acl.may_read("c", "alice", "a/alice/y") is True
    assert acl.may_read("c", "alice", "a/alice/x") is False


def test_an_empty_file_denies_everything() -> None:
    acl = AclFile.parse("# nothing yet\n\n")
    assert acl.rule_count == 0
    assert not acl.may_read("c", None, "a")
    assert not acl.may_write("c", "alice", "a")
    assert not acl.may_subscribe("c", "alice", "#")


@pytest.mark.parametrize(
    ("client_id", "username", "expected"),
    [
        ("phone", "alice", "devices/phone/alice"),
        ("%u", "alice", "devices/%u/alice"),  # one pass: a client id is never expanded again
        ("a+b", "alice", None),  # would be a wildcard
        ("a#", "alice", None),
        ("a/b", "alice", None),  # would reach into the subtree of client "a"
        ("", "alice", None),  # would collapse a level
        ("phone", "al+ice", None),
        ("phone", "al/ice", None),
        ("phone", None, None),
    ],
)
def test_substitute_refuses_values_that_would_widen_the_rule(
    client_id: str, username: str | None, expected: str | None
) -> None:
    assert substitute("devices/%c/%u", client_id, username) == expected


@pytest.mark.parametrize("client_id", ["+", "#", "a/b", "x/#"])
def test_a_dangerous_client_id_gets_nothing_from_a_pattern(client_id: str) -> None:
    acl = AclFile.parse("pattern readwrite devices/%c/#\n")
    topic = f"devices/{client_id.replace('#', 'h').replace('+', 'p')}/x"
    assert not acl.may_read(client_id, None, topic)
    assert not acl.may_write(client_id, None, topic)
    assert not acl.may_subscribe(client_id, None, f"devices/{client_id}")


def test_a_dangerous_client_id_keeps_its_plain_topic_rules() -> None:
    # As in mosquitto 2.0.11, where anonymous client "c+" still read a `topic read` topic.
    acl = AclFile.parse("topic read public/#\npattern read devices/%c/#\n")
    assert acl.may_read("c+", None, "public/x")


def test_topic_lines_in_a_users_section_are_not_anonymous_rules() -> None:
    acl = AclFile.parse("user alice\ntopic read a\nuser bob\ntopic read b\n")
    assert acl.anonymous_rules == []
    assert acl.may_read("c", "bob", "b") and not acl.may_read("c", "bob", "a")


@pytest.mark.parametrize(
    ("line", "access", "topic_filter"),
    [
        ("topic a/b", "readwrite", "a/b"),  # the access word is optional
        ("topic read", "readwrite", "read"),  # one word is the topic, even an access word
        ("topic  read   a/b  ", "read", "a/b"),  # extra spaces, trailing spaces
        ("  topic write a/b", "write", "a/b"),  # leading spaces
        ("topic read a b/c", "read", "a b/c"),  # with an access word, the rest is the topic
        ("topic deny #", "deny", "#"),
        ("topic write a/b\r", "write", "a/b"),  # a CRLF file
    ],
)
def test_topic_line_forms(line: str, access: str, topic_filter: str) -> None:
    (rule,) = AclFile.parse(line + "\n").anonymous_rules
    assert (rule.access, rule.topic_filter) == (access, topic_filter)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("topic\n", 1, "missing topic"),
        ("user\n", 1, "missing username"),
        ("# ok\nfoo bar\n", 2, "unknown keyword 'foo'"),
        ("topic\tread a\n", 1, "unknown keyword"),  # mosquitto splits on spaces only
        ("user a\ntopic readx y\n", 2, "invalid access type 'readx'"),
        ("topic a b\n", 1, "invalid access type 'a'"),
        ("topic read a/#/b\n", 1, "invalid ACL topic 'a/#/b'"),
        ("\n\ntopic read a/b#\n", 3, "invalid ACL topic"),
        ("pattern read %c/x+\n", 1, "invalid ACL topic '%c/x+'"),
    ],
)
def test_malformed_lines_are_errors_naming_path_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = tmp_path / "acl"
    path.write_text(text)
    with pytest.raises(AclFileError) as caught:
        AclFile.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: ")
    assert fragment in message


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(AclFileError, match="nope"):
        AclFile.load(tmp_path / "nope")


def test_load_reads_the_file(tmp_path: Path) -> None:
    (tmp_path / "acl").write_text(EXAMPLE)
    loaded = AclFile.load(tmp_path / "acl")
    assert loaded.path == tmp_path / "acl"
    assert loaded.may_read("x", "alice", "home/kitchen")


# ---------------------------------------------------------------------------------------------
# FilePolicy: authorisation and reload (authentication is in test_passwords.py)


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger("test.fullbroker.acl")


def test_without_an_acl_file_everything_is_allowed(log: logging.Logger) -> None:
    policy = FilePolicy(True, None, None, log)
    assert policy.may_subscribe("c", None, "#")
    assert policy.may_publish("c", "alice", "any/topic")
    assert policy.may_read("c", None, "$SYS/broker/uptime")


def test_with_an_acl_file_the_policy_asks_it(tmp_path: Path, log: logging.Logger) -> None:
    (tmp_path / "acl").write_text(EXAMPLE)
    policy = FilePolicy(False, None, tmp_path / "acl", log)
    assert policy.may_publish("x", "bob", "home/door") and not policy.may_publish("x", "bob", "sensors/t")
    assert policy.may_subscribe("x", "alice", "#") and not policy.may_subscribe("x", "alice", "home/safe")
    for client_id, username, topic, expected in READ_CASES:
        assert policy.may_read(client_id, username, topic) is expected, (client_id, username, topic)
        assert policy.may_read(client_id, username, topic) is expected  # the cached answer


def test_a_broken_acl_file_stops_the_policy_from_being_built(tmp_path: Path, log: logging.Logger) -> None:
    (tmp_path / "acl").write_text("topic read ok\nbogus line\n")
    with pytest.raises(AclFileError, match=r"acl:2: "):
        FilePolicy(True, None, tmp_path / "acl", log)


def test_reload_applies_new_rules_and_forgets_cached_answers(
    tmp_path: Path, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic read news/#\n")
    policy = FilePolicy(False, None, acl, log)
    assert policy.may_read("c", "alice", "news/today")
    acl.write_text("user alice\ntopic read sport/#\ntopic read weather/#\n")
    assert policy.may_read("c", "alice", "news/today")  # nothing changes until the reload
    with caplog.at_level(logging.INFO, logger=log.name):
        policy.reload()
    assert not policy.may_read("c", "alice", "news/today")
    assert policy.may_read("c", "alice", "sport/final")
    assert "reloaded ACL file (2 rules)" in caplog.text


def test_a_failed_reload_keeps_the_old_rules_and_names_file_and_line(
    tmp_path: Path, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic read news/#\n")
    policy = FilePolicy(False, None, acl, log)
    acl.write_text("user alice\ntopic read sport/#\ntopic maybe x y\n")
    with caplog.at_level(logging.INFO, logger=log.name):
        policy.reload()
    assert policy.may_read("c", "alice", "news/today")
    assert not policy.may_read("c", "alice", "sport/final")
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and f"{acl}:3: " in errors[0].getMessage()
    assert "reloaded" not in caplog.text


def test_the_read_cache_stays_bounded(
    tmp_path: Path, log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access, "READ_CACHE_LIMIT", 10)
    (tmp_path / "acl").write_text("topic read t/#\n")
    policy = FilePolicy(True, None, tmp_path / "acl", log)
    for number in range(25):
        assert policy.may_read("c", None, f"t/{number}")
        assert len(policy._rules.read_cache) <= 10
    assert not policy.may_read("c", None, "u/1")  # answers stay right across the clearing


def test_may_read_asks_the_acl_once_per_client_and_topic(
    tmp_path: Path, log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, str | None, str]] = []
    uncached = AclFile.may_read

    def counting(self: AclFile, client_id: str, username: str | None, topic: str) -> bool:
        asked.append((client_id, username, topic))
        return uncached(self, client_id, username, topic)

    monkeypatch.setattr(AclFile, "may_read", counting)
    (tmp_path / "acl").write_text("topic read t/#\nuser alice\ntopic read a/#\n")
    policy = FilePolicy(True, None, tmp_path / "acl", log)
    for _ in range(3):
        assert policy.may_read("c", None, "t/1")
        assert not policy.may_read("c", "alice", "t/1")  # same topic, another client: its own entry
    assert asked == [("c", None, "t/1"), ("c", "alice", "t/1")]
