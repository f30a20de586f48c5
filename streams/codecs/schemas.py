"""The schema repository: every ``.avsc`` under ``schemas/``, by full name, version and fingerprint.

Layout (the files are the contract, see README "Schemas"):

    schemas/common/<namespace.Name>.avsc              named types shared by events (Envelope, ...)
    schemas/inbound/<pack>/<namespace.Name>.v<N>.avsc   domain events, one file per version
    schemas/outbound/<namespace.Name>.v<N>.avsc         records Tidings itself produces

The highest version of a name is the *reader* schema: decoding resolves whatever version the
writer used (found by its CRC-64-AVRO fingerprint) to it. A fingerprint is computed on the
parsing canonical form of the schema with its named types expanded, as the Avro specification
defines it, so other languages' single-object encoders produce the same 8 bytes.
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

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


class SchemaRepository:
    """All schema versions, loaded once at start-up; lookups are dict reads."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._by_name: dict[str, dict[int, SchemaVersion]] = {}
        for v in versions:
            clash = self._by_fingerprint.get(v.fingerprint)
            if clash is not None:
                raise ConfigurationError(f"{v.path} has the same canonical form as {clash.path}")
            self._by_fingerprint[v.fingerprint] = v
            self._by_name.setdefault(v.name, {})[v.version] = v

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
            canonical = to_parsing_canonical_form(expanded)
            versions.append(
                SchemaVersion(
                    name=name,
                    version=int(match["version"]),
                    parsed=parsed,
                    fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
                    path=path,
                    group=path.parent.relative_to(root).as_posix(),
                    secrets=secret_paths(expanded),
                )
            )
        return cls(versions)

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)

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


def _parse(path: Path, named: dict[str, Any]) -> Mapping[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return parse_schema(raw, named_schemas=named)
    except (json.JSONDecodeError, SchemaParseException, UnknownType) as e:
        raise ConfigurationError(f"{path}: {e}") from e
