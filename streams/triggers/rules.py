"""Trigger packs: the declarative description of which event means which mails.

A pack file (``streams/packs/<pack>.yaml``) lists its triggers. An event trigger names the event
type it fires on, the field holding the entity id, and one or more mails, each with a recipient
role, the field of the event holding that recipient, and a template folder. One trigger may send
several different mails (an appointment booked mails the advisor and the customer).

Loading validates everything it can without rendering: unknown kinds, missing fields, duplicate
ids. Templates and schemas are checked against the packs by the loader's callers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.errors import ConfigurationError

PACKS_DIR = Path(__file__).resolve().parent.parent / "packs"

Role = Literal["customer", "user", "account_admin", "advisor", "org_admin", "prospect"]


class MailRule(BaseModel):
    """One mail a trigger sends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    recipient: str = Field(description="Dotted path to a tidings.common.Recipient in the event.")
    template: str = Field(description="Template folder under templates/<pack>/.")


class TriggerRule(BaseModel):
    """One trigger of a pack."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["event"]
    event: str = Field(description="Full Avro name of the event type that fires it.")
    entity: str = Field(description="Dotted path to the entity id in the event.")
    enabled_by_default: bool = False
    mails: tuple[MailRule, ...] = Field(min_length=1)


class PackFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pack: str
    languages: tuple[str, ...]
    triggers: dict[str, TriggerRule]


@dataclass(frozen=True)
class Trigger:
    """A trigger with its pack, ready for evaluation."""

    pack: str
    id: str
    rule: TriggerRule

    @property
    def key(self) -> str:
        """Unique across packs: ``storage/booking.created``."""
        return f"{self.pack}/{self.id}"


class Catalog:
    """Every trigger of every loaded pack, indexed by the event type that fires it."""

    def __init__(self, packs: Iterable[PackFile]) -> None:
        self.packs = {p.pack: p for p in packs}
        self._by_event: dict[str, list[Trigger]] = {}
        for pack in self.packs.values():
            for trigger_id, rule in pack.triggers.items():
                self._by_event.setdefault(rule.event, []).append(Trigger(pack.pack, trigger_id, rule))

    def for_event(self, type_name: str) -> list[Trigger]:
        return self._by_event.get(type_name, [])

    def handles(self, type_name: str) -> bool:
        return type_name in self._by_event

    def triggers(self) -> list[Trigger]:
        return [t for ts in self._by_event.values() for t in ts]

    @classmethod
    def load(cls, folder: Path = PACKS_DIR) -> Catalog:
        packs = []
        for path in sorted(folder.glob("*.yaml")):
            try:
                pack = PackFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
            except (yaml.YAMLError, ValidationError) as e:
                raise ConfigurationError(f"{path}: {e}") from e
            if pack.pack != path.stem:
                raise ConfigurationError(f"{path} declares pack {pack.pack!r}; the file must be named after it")
            packs.append(pack)
        if not packs:
            raise ConfigurationError(f"no trigger packs in {folder}")
        return cls(packs)
