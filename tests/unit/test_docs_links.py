"""README.md and docs/*.md stand alone: every link they hold resolves inside the repository.

A clone is all a reader has, so a link must point at a file (and heading) of the
repository or at a web address: relative links resolve to files that exist without
leaving the repository, there are no absolute or ``file:`` paths of the machine the docs
were written on, and no ``../`` reference reaches out of the checkout (``../shared/...``).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?(?P<target>[^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(?P<target>\S+?)>?(?:\s+.*)?$", re.MULTILINE)
AUTOLINK = re.compile(r"<(?P<target>[a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
HTML = re.compile(r"\b(?:href|src)\s*=\s*[\"'](?P<target>[^\"']*)[\"']")
WEB = {"http", "https", "mailto", "ws", "wss"}
OUTSIDE = re.compile(r"(?<![.\w])\.\./|(?<![\w.])/(?:work|home|root|Users)/")
"""Text that names a path outside the checkout: ``../x`` or a home/work directory of some machine."""


def prose(text: str) -> str:
    """``text`` without fenced code blocks (commands and payloads there are not links)."""
    return FENCE.sub("", text)


def links(text: str) -> list[str]:
    body = CODE_SPAN.sub("", prose(text))
    found = []
    for pattern in (INLINE, REFERENCE, AUTOLINK, HTML):
        found += [m["target"] for m in pattern.finditer(body)]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(path.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def problem(doc: Path, target: str) -> str | None:
    """Why ``target``, a link in ``doc``, does not stand alone, or ``None`` when it does."""
    parts = urlsplit(target)
    if parts.scheme:
        return None if parts.scheme.lower() in WEB else f"{parts.scheme}: link"
    if parts.netloc:
        return "protocol-relative link"
    if parts.path.startswith("/"):
        return "absolute path"
    resolved = (doc.parent / unquote(parts.path)).resolve() if parts.path else doc
    if not resolved.is_relative_to(ROOT.resolve()):
        return "points outside the repository"
    if not resolved.exists():
        return "no such file"
    if parts.fragment and resolved.suffix == ".md" and parts.fragment not in anchors(resolved):
        return f"no heading #{parts.fragment} in {resolved.relative_to(ROOT.resolve())}"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    bad = [f"{target}: {why}" for target in links(doc.read_text()) if (why := problem(doc, target))]
    assert not bad, f"{doc.relative_to(ROOT)} links outside the repository or to nothing: {bad}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_path_outside_the_checkout_is_named(doc: Path) -> None:
    hits = [m.group(0) for m in OUTSIDE.finditer(doc.read_text())]
    assert not hits, f"{doc.relative_to(ROOT)} names paths outside the repository: {hits}"


def test_the_checker_catches_what_it_is_for() -> None:
    doc = ROOT / "docs" / "architecture.md"
    assert problem(ROOT / "README.md", "../shared/notes.md") == "points outside the repository"
    assert problem(doc, "../../shared/notes.md") == "points outside the repository"
    assert problem(doc, "missing.md") == "no such file"
    assert problem(doc, "/work/shared/notes.md") == "absolute path"
    assert problem(doc, "file:///etc/hosts") == "file: link"
    assert problem(doc, "api.md#no-such-heading") is not None
    assert problem(doc, "api.md") is None
    assert problem(doc, "https://example.org/x") is None
    assert links("see [x](../shared/a.md), <file:///tmp/b> and\n[r]: ../c.md\n```\n[no](link.md)\n```\n") == [
        "../shared/a.md",
        "../c.md",
        "file:///tmp/b",
    ]
    assert OUTSIDE.search("read ../shared/brief.md") is not None
    assert OUTSIDE.search("GET /api/notifications/0193a1b2-.../explain") is None
