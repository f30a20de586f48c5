"""The schema repository: every ``.avsc`` under ``schemas/``, by full name, version and fingerprint.

Layout (the files are the contract, see README "Schemas"):

    schemas/common/<namespace.Name>.avsc              named types shared by events (Envelope, ...)
    schemas/inbound/<pack>/<namespace.Name>.v<N>.avsc   domain events, one file per version
    schemas/outbound/<namespace.Name>.v<N>.avsc         records Tidings itself produces

The highest version of a name is the *reader* schema: decoding resolves whatever version the
writer used (found by its CRC-64-AVRO fingerprint) to it.

Fingerprints follow the Avro specification: CRC-64-AVRO of the parsing canonical form of the
schema *as a standalone document*, in which each named type (``tidings.common.Recipient`` ...) is
defined in full where it is first used and referred to by its full name afterwards. That is what
Java's ``SchemaNormalization.parsingFingerprint64`` and every conforming library hash, so their
single-object encoders write the same 8 bytes. ``tests/java/vectors/fingerprints.json`` holds the
Java reference library's fingerprint of every committed schema and ``tests/unit/test_fingerprints.py``
compares.

Up to 4b30df2 Tidings hashed a form in which *every* use of a named type was expanded in full.
For a schema that uses a named type once the two forms are equal; for one that uses it twice
(``AppointmentBooked``: advisor and customer are both ``Recipient``) they differ. Records written
by the Python producer kit of that time carry the old fingerprint, so each version is also
findable by its *legacy* fingerprint (``SchemaVersion.legacy_fingerprint``, set only where it
differs); the codec marks such a record (``Decoded.legacy_fingerprint``) and the worker counts it
(``tidings_legacy_fingerprint_events_total``). README "Schemas" says how long they are accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.schema import (
    SchemaParseException,
    UnknownType,
    expand_schema,
    fingerprint,
    parse_schema,
    to_parsing_canonical_form,
)

from streams.errors import ConfigurationError

_VERSIONED = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One committed version of one record schema."""

    name: str
    version: int
    parsed: Any
    fingerprint: bytes
    path: Path
    group: str
    secrets: tuple[str, ...] = ()
    # The fingerprint Tidings computed before it followed the specification, where it differs.
    legacy_fingerprint: bytes | None = None

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


class SchemaRepository:
    """All schema versions, loaded once at start-up; lookups are dict reads."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._by_name: dict[str, dict[int, SchemaVersion]] = {}
        self._legacy: dict[bytes, SchemaVersion] = {}
        for v in versions:
            clash = self._by_fingerprint.get(v.fingerprint)
            if clash is not None:
                raise ConfigurationError(f"{v.path} has the same canonical form as {clash.path}")
            self._by_fingerprint[v.fingerprint] = v
            self._by_name.setdefault(v.name, {})[v.version] = v
        for v in versions:
            # A legacy fingerprint never shadows a current one (a CRC-64 collision would need it).
            if v.legacy_fingerprint is not None and v.legacy_fingerprint not in self._by_fingerprint:
                self._legacy[v.legacy_fingerprint] = v

    @classmethod
    def load(cls, root: Path) -> SchemaRepository:
        if not root.is_dir():
            raise ConfigurationError(f"schema directory {root} does not exist")
        named: dict[str, Any] = {}
        for path in sorted((root / "common").glob("*.avsc")):
            _parse(path, named)
        versions = []
        for path in sorted(root.rglob("*.v*.avsc")):
            match = _VERSIONED.match(path.name)
            if match is None:
                raise ConfigurationError(f"{path}: name it <namespace.Name>.v<N>.avsc")
            # Each version is parsed against the shared types but must not add to them.
            parsed = _parse(path, dict(named))
            name = parsed["name"]
            if name != match["name"]:
                raise ConfigurationError(f"{path} declares {name}; rename the file or the record")
            expanded = expand_schema(parsed)
            current = spec_fingerprint(parsed)
            legacy = _crc64(to_parsing_canonical_form(expanded))
            versions.append(
                SchemaVersion(
                    name=name,
                    version=int(match["version"]),
                    parsed=parsed,
                    fingerprint=current,
                    path=path,
                    group=path.parent.relative_to(root).as_posix(),
                    secrets=secret_paths(expanded),
                    legacy_fingerprint=None if legacy == current else legacy,
                )
            )
        return cls(versions)

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        """The version with this fingerprint, current or legacy (see the module docstring)."""
        found = self._by_fingerprint.get(fp)
        return found if found is not None else self._legacy.get(fp)

    def latest(self, name: str) -> SchemaVersion:
        try:
            versions = self._by_name[name]
        except KeyError:
            raise KeyError(f"no schema named {name}") from None
        return versions[max(versions)]

    def has(self, name: str) -> bool:
        return name in self._by_name

    def version(self, name: str, version: int) -> SchemaVersion:
        return self._by_name[name][version]

    def names(self, group_prefix: str = "") -> list[str]:
        return sorted(n for n, vs in self._by_name.items() if next(iter(vs.values())).group.startswith(group_prefix))

    def __iter__(self) -> Iterator[SchemaVersion]:
        return iter(self._by_fingerprint.values())


def standalone(schema: Any, named: Mapping[str, Any] | None = None) -> Any:
    """The schema as one self-contained document: each named type defined at its first use, then named.

    ``schema`` is a ``parse_schema`` result, whose references to shared types are full names and
    whose ``__named_schemas`` holds their definitions. The result is what a registry or another
    language's parser accepts (a named type defined twice is an error there) and what the
    specification's parsing canonical form is computed on.
    """
    defs = dict(named if named is not None else schema.get("__named_schemas", {}) if isinstance(schema, dict) else {})
    defined: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            if node in defs and node not in defined:
                return walk(defs[node])
            return node
        if isinstance(node, list):
            return [walk(branch) for branch in node]
        if not isinstance(node, dict):
            return node
        out = {k: v for k, v in node.items() if not k.startswith("__")}
        kind = node.get("type")
        if kind in ("record", "error", "enum", "fixed") and "name" in node:
            defined.add(node["name"])
        if kind in ("record", "error"):
            out["fields"] = [{**f, "type": walk(f["type"])} for f in node["fields"]]
        elif kind == "array":
            out["items"] = walk(node["items"])
        elif kind == "map":
            out["values"] = walk(node["values"])
        elif isinstance(kind, (dict, list)):
            out["type"] = walk(kind)
        return out

    return walk(schema)


def spec_fingerprint(parsed: Any) -> bytes:
    """CRC-64-AVRO of the parsing canonical form of ``parsed`` as a standalone schema, as written on the wire."""
    return _crc64(to_parsing_canonical_form(standalone(parsed)))


def _crc64(canonical: str) -> bytes:
    # fastavro's hex is the little-endian byte order single-object encoding writes.
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def secret_paths(schema: Any, prefix: str = "") -> tuple[str, ...]:
    """Dotted paths of the fields marked ``"secret": true`` (reset links, tokens), nested records included.

    Secrets may reach the mail they exist for, and nowhere else: not logs, not metrics, not the
    dead-letter topic (see ``streams/ingest/redact.py``).
    """
    found: list[str] = []
    if isinstance(schema, list):
        for branch in schema:
            found.extend(secret_paths(branch, prefix))
    elif isinstance(schema, dict) and schema.get("type") == "record":
        for field in schema["fields"]:
            path = f"{prefix}{field['name']}"
            if field.get("secret") is True:
                found.append(path)
            found.extend(secret_paths(field["type"], f"{path}."))
    elif isinstance(schema, dict) and schema.get("type") in ("array", "map"):
        found.extend(secret_paths(schema.get("items") or schema.get("values"), prefix))
    return tuple(dict.fromkeys(found))


def _parse(path: Path, named: dict[str, Any]) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        parsed = parse_schema(raw, named_schemas=named)
    except (json.JSONDecodeError, SchemaParseException, UnknownType) as e:
        raise ConfigurationError(f"{path}: {e}") from e
    if not isinstance(parsed, dict):
        raise ConfigurationError(f"{path}: a schema file holds one named type (a JSON object)")
    return parsed
