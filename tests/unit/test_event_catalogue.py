"""docs/events.md agrees with schemas/: one section per event type, field tables generated.

Each section of the catalogue holds a generated field table between
``<!-- fields:TYPE -->`` and ``<!-- /fields -->``. Regenerate them after a schema change:

    uv run python -m tests.unit.test_event_catalogue --write
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from schemas.codec import schema
from schemas.events import EVENT_TYPES

CATALOGUE = Path(__file__).parents[2] / "docs" / "events.md"
BLOCK = re.compile(r"<!-- fields:(?P<type>[a-z_.]+) -->\n(?P<table>.*?)<!-- /fields -->", re.DOTALL)


def _kind(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " \\| ".join("null" if v is None else f"`{v}`" for v in prop["enum"])
    kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    text = " \\| ".join(kinds)
    if prop.get("format"):
        text += f" ({prop['format']})"
    if prop.get("type") == "array" and "items" in prop:
        text += " of " + _kind(prop["items"])
    return text


def render(event_type: str) -> str:
    """The field table of ``event_type``'s current schema version."""
    cls = EVENT_TYPES[event_type]
    doc = schema(event_type, cls.VERSION)
    lines = [
        f"Schema: `schemas/{event_type}/v{cls.VERSION}.json`",
        "",
        "| field | type | required | description |",
        "|---|---|---|---|",
    ]
    for name, prop in doc["properties"].items():
        required = "yes" if name in doc["required"] else "no"
        description = prop["description"].replace("|", "\\|")
        lines.append(f"| `{name}` | {_kind(prop)} | {required} | {description} |")
    return "\n".join(lines) + "\n"


def blocks(text: str) -> dict[str, str]:
    """Generated tables found in the catalogue, by event type."""
    return {m["type"]: m["table"] for m in BLOCK.finditer(text)}


def rewrite(text: str) -> str:
    """``text`` with every generated table brought up to date."""
    return BLOCK.sub(lambda m: f"<!-- fields:{m['type']} -->\n{render(m['type'])}<!-- /fields -->", text)


def test_every_event_type_has_a_section_and_no_section_is_stale() -> None:
    text = CATALOGUE.read_text()
    found = blocks(text)
    assert set(found) == set(EVENT_TYPES), "docs/events.md sections differ from schemas/"
    for event_type in EVENT_TYPES:
        assert f"### `{event_type}`" in text, f"{event_type} needs a heading"
        assert found[event_type] == render(event_type), (
            f"{event_type}: field table out of date; run `uv run python -m tests.unit.test_event_catalogue --write`"
        )


if __name__ == "__main__":
    if "--write" in sys.argv:
        CATALOGUE.write_text(rewrite(CATALOGUE.read_text()))
    else:
        for event_type in EVENT_TYPES:
            section = f"### `{event_type}`\n\n<!-- fields:{event_type} -->\n{render(event_type)}<!-- /fields -->\n\n"
            sys.stdout.write(section)
