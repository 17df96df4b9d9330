"""docs/configuration.md lists every setting, by concern, as ``Settings`` defines it.

The tables between ``<!-- settings -->`` and ``<!-- /settings -->`` and the list between
``<!-- not-settings -->`` and ``<!-- /not-settings -->`` are generated from the settings
classes (fields, defaults, attribute docstrings) and ``engine.settings.SECTIONS``. Regenerate them
after adding or changing a setting:

    uv run python -m tests.unit.test_settings_reference --write
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from engine import settings as settings_module
from engine.settings import NOT_SETTINGS, SECTIONS, Settings

REFERENCE = Path(__file__).parents[2] / "docs" / "configuration.md"
BLOCKS = {
    "settings": re.compile(r"(<!-- settings -->\n)(?P<body>.*?)(<!-- /settings -->)", re.DOTALL),
    "not-settings": re.compile(r"(<!-- not-settings -->\n)(?P<body>.*?)(<!-- /not-settings -->)", re.DOTALL),
}
KINDS = {
    "str": "text",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "bool | None": "boolean",
    "tuple[str, ...]": "comma-separated list",
}
DEFAULT_SHOWN = {
    "jwt_secret": "a dev-only secret (`herald worker`, `projector` and `api` refuse it)",
    "apns_sandbox": "unset (required with an APNs key)",
}


def docstrings() -> dict[str, str]:
    """Each field's attribute docstring, on one line, from every class of engine/settings.py (one per concern)."""
    tree = ast.parse(inspect.getsource(settings_module))
    found: dict[str, str] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for statement, after in zip(cls.body, cls.body[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                found[statement.target.id] = " ".join(after.value.value.split()).replace("``", "`")
    return found


def fields() -> dict[str, FieldInfo]:
    return {name: field for name, field in Settings.model_fields.items() if name != "extra"}


def kind(annotation: Any) -> str:
    """``int`` for a plain class, else the annotation as written (``bool | None``, ``tuple[str, ...]``)."""
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def render_settings() -> str:
    """One table per section of ``SECTIONS``."""
    described = docstrings()
    defaults = Settings().to_env()
    out: list[str] = []
    for title, names in SECTIONS:
        out += [f"### {title}", "", "| variable | type | default | meaning |", "|---|---|---|---|"]
        for name in names:
            variable = f"HERALD_{name.upper()}"
            if name in DEFAULT_SHOWN:
                default = DEFAULT_SHOWN[name]
            elif defaults[variable] == "":
                default = "empty"
            else:
                default = f"`{defaults[variable]}`"
            type_shown = KINDS[kind(fields()[name].annotation)]
            meaning = described[name].replace("|", "\\|")
            out.append(f"| `{variable}` | {type_shown} | {default} | {meaning} |")
        out.append("")
    return "\n".join(out)


def render_not_settings() -> str:
    return "".join(f"- `{name}`\n" for name in sorted(NOT_SETTINGS))


RENDER = {"settings": render_settings, "not-settings": render_not_settings}


def rewrite(text: str) -> str:
    """``text`` with every generated block brought up to date."""
    for key, block in BLOCKS.items():
        text = block.sub(lambda m, key=key: f"{m[1]}{RENDER[key]()}{m[3]}", text)  # type: ignore[misc]
    return text


def test_every_setting_is_in_exactly_one_section() -> None:
    listed = Counter(name for _, names in SECTIONS for name in names)
    assert {name for name, count in listed.items() if count > 1} == set(), "a setting in two sections"
    assert set(listed) == set(fields()), "engine.settings.SECTIONS must name every field of Settings once"


def test_every_setting_has_a_description_and_a_documented_type() -> None:
    described = docstrings()
    assert set(fields()) <= set(described), f"no docstring: {set(fields()) - set(described)}"
    assert {kind(f.annotation) for f in fields().values()} <= set(KINDS), "a new field type: name it in KINDS"


def test_the_reference_in_docs_is_up_to_date() -> None:
    text = REFERENCE.read_text()
    for key, block in BLOCKS.items():
        found = block.search(text)
        assert found, f"docs/configuration.md lost its <!-- {key} --> block"
        assert found["body"] == RENDER[key](), (
            "docs/configuration.md is out of date; run `uv run python -m tests.unit.test_settings_reference --write`"
        )
    for variable in (f"HERALD_{name.upper()}" for name in fields()):
        assert f"| `{variable}` |" in text


if __name__ == "__main__":
    if "--write" in sys.argv:
        REFERENCE.write_text(rewrite(REFERENCE.read_text()))
    else:
        sys.stdout.write(render_settings())
