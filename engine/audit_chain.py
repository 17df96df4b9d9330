"""The audit export format: JSON Lines with a SHA-256 hash chain per partition and a manifest.

A file is a header line, one line per Kafka record, then a manifest line. Each record
line carries its position in the file (``n``), its provenance (topic, partition, offset,
timestamp), the record, the hash of the previous line *of the same partition* (``prev``)
and its own hash: SHA-256 of the line's exact bytes without the trailing ``hash`` member.
Hashing bytes (not a re-serialisation) means no canonical-JSON subtleties: any changed
byte changes the hash. The manifest holds the count, each partition's first and last
offsets and final hash, the header's hash and, when a key is configured, an HMAC-SHA256
signature over itself. Pure: bytes in, bytes or a verdict out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.errors import HeraldError

FORMAT = "herald.audit"
"""``format`` of the header line: what tells an export from any other JSON Lines file."""
MANIFEST_FORMAT = "herald.audit.manifest"
"""``format`` of the manifest line."""
VERSION = 1
"""Version of the format this module writes and reads."""
GENESIS = "0" * 64
"""``prev`` of the first line of each partition."""
SIGNATURE_ALG = "HMAC-SHA256"
"""The only signature algorithm written and accepted (pinned: never read from the file)."""

_HASH_SUFFIX = re.compile(rb',"hash":"([0-9a-f]{64})"\}$')
_SUFFIX_LENGTH = len(',"hash":""}') + 64


class AuditFileError(HeraldError):
    """An export file that does not verify; ``line`` is the first bad line (1-based)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(slots=True)
class PartitionSummary:
    """What the manifest records for one partition."""

    count: int = 0
    first_offset: int = -1
    last_offset: int = -1
    final_hash: str = GENESIS

    def as_json(self) -> dict[str, Any]:
        """The manifest's object for this partition."""
        return {
            "count": self.count,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "final_hash": self.final_hash,
        }


def header_line(topic: str, exported_at: str, selection: Mapping[str, Any]) -> bytes:
    """The first line of an export (no newline)."""
    return orjson.dumps(
        {"format": FORMAT, "version": VERSION, "topic": topic, "exported_at": exported_at, "selection": selection}
    )


def value_member(value: bytes | None) -> dict[str, Any]:
    """How a record's value is written: as JSON when it is JSON, else as text or base64."""
    if value is None:
        return {"value": None}
    try:
        return {"value": orjson.loads(value)}
    except orjson.JSONDecodeError:
        pass  # not JSON, or JSON orjson cannot hold (integers past 64 bits): kept as text
    try:
        return {"value_text": value.decode()}
    except UnicodeDecodeError:
        return {"value_b64": base64.b64encode(value).decode()}


def key_member(key: bytes | None) -> dict[str, Any]:
    """How a record's key is written: text when UTF-8, else base64."""
    if key is None:
        return {"key": None}
    try:
        return {"key": key.decode()}
    except UnicodeDecodeError:
        return {"key_b64": base64.b64encode(key).decode()}


class Writer:
    """Builds the record lines and the manifest of one export, in file order."""

    def __init__(self, header: bytes) -> None:
        self.header_sha256 = hashlib.sha256(header).hexdigest()
        self.partitions: dict[int, PartitionSummary] = {}
        self.count = 0

    def record(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        timestamp: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> bytes:
        """The line of the next record (no newline); records of a partition come in offset order."""
        summary = self.partitions.setdefault(partition, PartitionSummary())
        self.count += 1
        body: dict[str, Any] = {
            "n": self.count + 1,  # line 1 is the header
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp": timestamp,
            "timestamp_ms": timestamp_ms,
            **key_member(key),
            **value_member(value),
        }
        if headers:
            body["headers"] = [[k, v.decode("utf-8", "backslashreplace")] for k, v in headers]
        body["prev"] = summary.final_hash
        raw = orjson.dumps(body)
        digest = hashlib.sha256(raw).hexdigest()
        if summary.count == 0:
            summary.first_offset = offset
        summary.count += 1
        summary.last_offset = offset
        summary.final_hash = digest
        return raw[:-1] + b',"hash":"' + digest.encode() + b'"}'

    def manifest(self, key: bytes | None = None) -> bytes:
        """The last line (no newline), signed with ``key`` when one is given."""
        return manifest_line(self.count, self.header_sha256, self.partitions, key)


def manifest_line(
    count: int, header_sha256: str, partitions: Mapping[int, PartitionSummary], key: bytes | None
) -> bytes:
    """The manifest: count, header hash, per partition summary, signature or ``null``."""
    body: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": VERSION,
        "count": count,
        "header_sha256": header_sha256,
        "partitions": {str(p): s.as_json() for p, s in sorted(partitions.items())},
    }
    body["signature"] = {"alg": SIGNATURE_ALG, "value": _sign(body, key)} if key else None
    return orjson.dumps(body)


def _sign(body: Mapping[str, Any], key: bytes) -> str:
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return hmac.new(key, orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


@dataclass(slots=True)
class Verdict:
    """What a successful verification established."""

    count: int = 0
    partitions: dict[int, PartitionSummary] = field(default_factory=dict)
    signed: bool = False
    header: dict[str, Any] = field(default_factory=dict)


class Verifier:
    """Checks an export line by line; the first problem raises ``AuditFileError`` naming its line.

    Feed every line (with or without its newline) in file order, then call ``finish``.
    ``key``: the HMAC key; when given, the manifest must carry a valid signature.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key
        self._line = 0
        self._verdict = Verdict()
        self._header_sha256 = ""
        self._manifest: dict[str, Any] | None = None
        self._last_ended = True

    def feed(self, line: bytes) -> None:
        """Check the next line of the file."""
        self._line += 1
        n = self._line
        self._last_ended = line.endswith(b"\n")
        line = line.rstrip(b"\r\n")
        if self._manifest is not None:
            raise AuditFileError(n, "data after the manifest (a line was appended)")
        if n == 1:
            self._header(line)
            return
        if line.startswith(b'{"format":"' + MANIFEST_FORMAT.encode()):
            self._manifest = self._parse(n, line, "manifest")
            return
        self._record(n, line)

    def finish(self) -> Verdict:
        """Check the manifest against everything seen; the verdict when all is well."""
        if self._line == 0:
            raise AuditFileError(1, "empty file: not a Herald audit export")
        end = self._line
        if not self._last_ended:
            raise AuditFileError(end, "truncated: the file ends in the middle of a line")
        manifest = self._manifest
        if manifest is None:
            raise AuditFileError(end, "truncated: the file ends without a manifest")
        self._check_manifest(end, manifest)
        return self._verdict

    def _header(self, line: bytes) -> None:
        header = _loads(line)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise AuditFileError(1, "not a Herald audit export (no export header)")
        if header.get("version") != VERSION:
            raise AuditFileError(1, f"unsupported export version {header.get('version')!r} (this reads {VERSION})")
        self._header_sha256 = hashlib.sha256(line).hexdigest()
        self._verdict.header = header

    def _record(self, n: int, line: bytes) -> None:
        match = _HASH_SUFFIX.search(line)
        if match is None:
            raise AuditFileError(n, "not an export record (damaged, truncated or foreign line)")
        raw = line[:-_SUFFIX_LENGTH] + b"}"
        if hashlib.sha256(raw).hexdigest() != match.group(1).decode():
            raise AuditFileError(n, "modified: its content does not match its hash")
        body = self._parse(n, raw, "record")
        number, partition, offset, prev = body.get("n"), body.get("partition"), body.get("offset"), body.get("prev")
        if not (isinstance(number, int) and isinstance(partition, int) and isinstance(offset, int)):
            raise AuditFileError(n, "not an export record (no line number, partition or offset)")
        if number != n:
            raise AuditFileError(
                n, f"out of place: it was line {number} of the export (a line was deleted, inserted or moved)"
            )
        summary = self._verdict.partitions.setdefault(partition, PartitionSummary())
        if prev != summary.final_hash:
            raise AuditFileError(
                n,
                f"chain broken: its previous hash is not the hash of the last line of partition {partition}"
                " (a line was deleted, inserted or moved)",
            )
        if summary.count and offset <= summary.last_offset:
            raise AuditFileError(n, f"offset {offset} of partition {partition} is not after {summary.last_offset}")
        if summary.count == 0:
            summary.first_offset = offset
        summary.count += 1
        summary.last_offset = offset
        summary.final_hash = match.group(1).decode()
        self._verdict.count += 1

    def _check_manifest(self, n: int, manifest: dict[str, Any]) -> None:
        if manifest.get("version") != VERSION:
            raise AuditFileError(n, f"manifest: unsupported version {manifest.get('version')!r}")
        if manifest.get("header_sha256") != self._header_sha256:
            raise AuditFileError(n, "manifest: the header was modified")
        if manifest.get("count") != self._verdict.count:
            raise AuditFileError(
                n, f"manifest: it lists {manifest.get('count')} records, the file has {self._verdict.count}"
            )
        expected = {str(p): s.as_json() for p, s in sorted(self._verdict.partitions.items())}
        listed = manifest.get("partitions")
        if listed != expected:
            names = sorted(set(expected) | set(listed if isinstance(listed, dict) else {}))
            bad = next((p for p in names if not isinstance(listed, dict) or listed.get(p) != expected.get(p)), names[0])
            raise AuditFileError(
                n, f"manifest: partition {bad} does not match its records (count, offsets or final hash)"
            )
        signature = manifest.get("signature")
        if signature is None:
            if self._key:
                raise AuditFileError(n, "manifest: not signed, but a signing key is configured")
            return
        if not isinstance(signature, dict) or signature.get("alg") != SIGNATURE_ALG:
            raise AuditFileError(n, f"manifest: unsupported signature (only {SIGNATURE_ALG})")
        if not self._key:
            raise AuditFileError(n, "manifest: signed, but no signing key is configured to check it")
        value = signature.get("value")
        if not isinstance(value, str) or not hmac.compare_digest(value, _sign(manifest, self._key)):
            raise AuditFileError(n, "manifest: bad signature (the manifest was modified or the key differs)")
        self._verdict.signed = True

    @staticmethod
    def _parse(n: int, raw: bytes, what: str) -> dict[str, Any]:
        body = _loads(raw)
        if not isinstance(body, dict):
            raise AuditFileError(n, f"not an export {what} (not a JSON object)")
        return body


def verify(lines: Iterable[bytes], key: bytes | None = None) -> Verdict:
    """Verify a whole export given as lines (see ``Verifier``)."""
    verifier = Verifier(key)
    for line in lines:
        verifier.feed(line)
    return verifier.finish()


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
