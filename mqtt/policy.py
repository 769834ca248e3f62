"""Authentication and authorisation hooks the core consults; the default allows everything.

The full broker's password and ACL files subclass ``Policy``. A refused subscription is
answered with SUBACK 0x80; a refused publish is acknowledged and silently dropped, because
MQTT 3.1.1 has no negative acknowledgement for PUBLISH. ``may_read`` is asked once per
delivery, so a filter granted broadly still never carries a topic the reader may not see.
"""

from __future__ import annotations

from .packets import ConnackCode, Connect


class Policy:
    def authenticate(self, connect: Connect) -> int:
        """Return a CONNACK code: ``ConnackCode.ACCEPTED`` or a refusal."""
        return ConnackCode.ACCEPTED

    def may_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        return True

    def may_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        return True

    def may_read(self, client_id: str, username: str | None, topic: str) -> bool:
        """Checked per delivery, retained copies included: a granted wildcard never leaks a topic."""
        return True
