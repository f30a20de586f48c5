"""Trigger packs: the declarative description of which event means which mails.

A pack is a folder ``streams/packs/<pack>/`` with

- ``pack.yaml``: the languages it ships templates in, its topics (one per aggregate, with the
  event types published there) and its triggers. An event trigger names the event type it fires
  on, the field holding the entity id, and one or more mails, each with a recipient role, the
  field of the event holding that recipient, and a template folder. One trigger may send several
  different mails (an appointment booked mails the advisor and the customer).
- ``samples.yaml``: one realistic event per event type (see ``streams/triggers/samples.py``).

Loading validates what it can without rendering: unknown kinds, missing fields, a trigger on an
event its pack does not route to a topic. Schemas and templates are checked against the packs by
``check_against`` and by the lint tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.errors import ConfigurationError
from streams.triggers.samples import load_samples

PACKS_DIR = Path(__file__).resolve().parent.parent / "packs"

Role = Literal["customer", "user", "account_admin", "advisor", "org_admin", "prospect"]


class AttachmentRule(BaseModel):
    """A file from the object store that goes with a mail (an invoice PDF)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str = Field(description="Dotted path to the object-store URI in the event; no attachment when it is null.")
    filename: str = Field(description="File name, a template over the event's fields: invoice-{{ invoice_number }}.pdf")
    content_type: str = "application/pdf"


class MailRule(BaseModel):
    """One mail a trigger sends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    recipient: str = Field(description="Dotted path to a tidings.common.Recipient in the event.")
    template: str = Field(description="Template folder under templates/<pack>/.")
    attachments: tuple[AttachmentRule, ...] = ()


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

    pack: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    languages: tuple[str, ...] = Field(min_length=1)
    topics: dict[str, tuple[str, ...]] = Field(min_length=1)
    triggers: dict[str, TriggerRule]

    @model_validator(mode="after")
    def _events_are_routed(self) -> PackFile:
        routed = {event for events in self.topics.values() for event in events}
        for trigger_id, rule in self.triggers.items():
            if rule.event not in routed:
                raise ValueError(f"trigger {trigger_id} fires on {rule.event}, which no topic of the pack carries")
        return self


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

    def __init__(self, packs: Iterable[PackFile], samples: dict[str, dict[str, Any]] | None = None) -> None:
        self.packs = {p.pack: p for p in packs}
        self.samples = samples or {}
        self._by_event: dict[str, list[Trigger]] = {}
        self._topic_of: dict[str, str] = {}
        for pack in self.packs.values():
            for aggregate, events in pack.topics.items():
                for event in events:
                    self._topic_of[event] = f"{pack.pack}.{aggregate}"
            for trigger_id, rule in pack.triggers.items():
                self._by_event.setdefault(rule.event, []).append(Trigger(pack.pack, trigger_id, rule))

    def for_event(self, type_name: str) -> list[Trigger]:
        return self._by_event.get(type_name, [])

    def handles(self, type_name: str) -> bool:
        return type_name in self._by_event

    def triggers(self) -> list[Trigger]:
        return [t for ts in self._by_event.values() for t in ts]

    def topic_suffixes(self) -> list[str]:
        """``<pack>.<aggregate>`` of every inbound topic; the prefix comes from the settings."""
        return sorted(set(self._topic_of.values()))

    def topic_suffix_for(self, type_name: str) -> str:
        try:
            return self._topic_of[type_name]
        except KeyError:
            raise KeyError(f"no pack routes {type_name} to a topic") from None

    def event_types(self) -> list[str]:
        return sorted(self._topic_of)

    @classmethod
    def load(cls, folder: Path = PACKS_DIR) -> Catalog:
        packs, samples = [], {}
        for path in sorted(folder.glob("*/pack.yaml")):
            try:
                pack = PackFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
            except (yaml.YAMLError, ValidationError) as e:
                raise ConfigurationError(f"{path}: {e}") from e
            if pack.pack != path.parent.name:
                raise ConfigurationError(f"{path} declares pack {pack.pack!r}; the folder must be named after it")
            packs.append(pack)
            samples.update(load_samples(path.parent / "samples.yaml"))
        if not packs:
            raise ConfigurationError(f"no trigger packs in {folder}")
        return cls(packs, samples)
