"""Email bodies of a notification: a plain-text and an HTML rendering of simple templates.

``string.Template`` on purpose: the content comes from producers, so nothing in it
may be evaluated; the HTML variant escapes every value.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from string import Template

from schemas.events import NotificationAccepted

PLAIN = Template("""$title

$body

--
Sent by Herald (notification $notification_id, priority $priority).
""")

HTML = Template("""<!doctype html>
<html><body style="font-family: sans-serif">
<h1 style="font-size: 1.3em">$title</h1>
<p>$body</p>
<hr><p style="color: #777; font-size: 0.8em">Sent by Herald (notification $notification_id, priority $priority).</p>
</body></html>
""")


@dataclass(frozen=True, slots=True)
class Rendered:
    """What goes into one email."""

    subject: str
    """The ``Subject`` header: the notification's title."""
    text: str
    """The ``text/plain`` part."""
    html: str
    """The ``text/html`` alternative."""


def render(accepted: NotificationAccepted) -> Rendered:
    """The email of ``accepted``."""
    values = {
        "title": accepted.title,
        "body": accepted.body,
        "notification_id": accepted.notification_id,
        "priority": accepted.priority,
    }
    escaped = {k: html.escape(v) for k, v in values.items()}
    escaped["body"] = escaped["body"].replace("\n", "<br>\n")
    # Header injection: a title is one line.
    subject = " ".join(accepted.title.split())
    return Rendered(subject=subject, text=PLAIN.substitute(values), html=HTML.substitute(escaped))
