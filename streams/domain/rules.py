"""Trigger packs: the declarative description of which event means which mails.

A pack is a folder ``streams/packs/<pack>/`` with

- ``pack.yaml``: the languages it ships templates in, its topics (one per aggregate, with the
  event types published there) and its triggers. An event trigger names the event type it fires
  on, the field holding the entity id, and one or more mails, each with a recipient role, the
  field of the event holding that recipient, and a template folder. One trigger may send several
  different mails (an appointment booked mails the advisor and the customer).
- ``samples.yaml``: one realistic event per event type (see ``streams/domain/samples.py``).

Loading validates what it can without rendering: unknown kinds, missing fields, a trigger on an
event its pack does not route to a topic. Schemas and templates are checked against the packs by
``check_against`` and by the lint tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.domain.conditions import problems as condition_problems
from streams.domain.samples import load_samples
from streams.errors import ConfigurationError

PACKS_DIR = Path(__file__).resolve().parent.parent / "packs"

Role = Literal["customer", "user", "account_admin", "advisor", "org_admin", "prospect"]
# The sender's lanes, highest first: "high" for mails a person is waiting for (password reset,
# MFA), never queued behind "normal" mail or "bulk" reminders and digests.
Priority = Literal["high", "normal", "bulk"]


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


class EventRule(BaseModel):
    """A trigger that fires once per event of one type, now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["event"]
    event: str = Field(description="Full Avro name of the event type that fires it.")
    entity: str = Field(description="Dotted path to the entity id in the event.")
    enabled_by_default: bool = False
    priority: Priority = "normal"
    transactional: bool = Field(True, description="False: a mail the recipient may opt out of (List-Unsubscribe).")
    mails: tuple[MailRule, ...] = Field(min_length=1)
    max_age: Span | None = Field(
        None,
        description="An event older than this when it is processed sends nothing (skipped, counted stale). "
        "Default: 1 hour for high-priority mails (a password reset), 7 days for the others.",
    )

    @property
    def age_limit(self) -> dt.timedelta:
        if self.max_age is not None:
            return self.max_age.delta
        return STALE_HIGH if self.priority == "high" else STALE_DEFAULT


# DESIGN invariant 10: nothing stale. A replayed or long-delayed event must not mail today what
# was meant for a day long gone (a reset link an hour old is useless, a week-old "booking
# confirmed" confuses); and the delivery ledger's retention (TIDINGS_LEDGER_RETENTION_DAYS) must
# outlast every limit, so no re-read can send a mail whose id has left the ledger.
STALE_HIGH = dt.timedelta(hours=1)
STALE_DEFAULT = dt.timedelta(days=7)


class Span(BaseModel):
    """A length of time in one unit; which unit also names the tenant parameter that overrides it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: int | None = None
    hours: int | None = None
    minutes: int | None = None

    @model_validator(mode="after")
    def _one_unit(self) -> Span:
        if sum(v is not None for v in (self.days, self.hours, self.minutes)) != 1:
            raise ValueError("give exactly one of days, hours, minutes")
        return self

    @property
    def unit(self) -> str:
        return "days" if self.days is not None else "hours" if self.hours is not None else "minutes"

    @property
    def amount(self) -> int:
        return next(v for v in (self.days, self.hours, self.minutes) if v is not None)

    @property
    def delta(self) -> dt.timedelta:
        return dt.timedelta(**{self.unit: self.amount})


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class TimedRule(BaseModel):
    """A trigger that fires when time reaches a point derived from an entity's current state.

    - ``date``: the date in ``at`` is reached, at the local send time;
    - ``relative``: ``offset`` before (negative) or after the date or instant in ``at``; or, with
      ``steps``, once per step after it (dunning). Dates fire at the local send time, instants
      exactly (an appointment 24 hours ahead);
    - ``absence``: the instant in ``at`` (the last sign of life) plus ``window`` passed with no
      newer one; ``confirmed_by`` names a field set by an explicit event that ends the wait early;
    - ``recurring``: every ``weekday`` at the local send time, while ``when`` holds.

    ``when`` is a condition on the entity state (``{status: active, open_slots: {lt: 5}}``); a
    value written ``$name`` is the tenant parameter ``name``, defaulting to ``params[name]``. A
    tenant parameter named after the unit of ``offset``/``window`` (``days``, ``hours``,
    ``minutes``) or ``steps`` replaces the pack's figure; ``send_time`` ("HH:MM") the tenant's
    default send time. A mail later than ``grace`` after its due time is skipped and counted.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["date", "relative", "absence", "recurring"]
    entity: str = Field(description="The entity (table) of the pack whose state the trigger follows.")
    at: str | None = Field(None, description="State field holding the date or instant the trigger is relative to.")
    offset: Span | None = None
    steps: tuple[int, ...] | None = Field(None, description="Days after `at`, one mail per step (dunning).")
    window: Span | None = None
    confirmed_by: str | None = None
    weekday: Weekday | None = None
    when: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict, description="Defaults of the $parameters used in `when`.")
    grace: Span = Field(description="How late a mail may still go out after its due time.")
    enabled_by_default: bool = False
    priority: Priority = "normal"
    transactional: bool = Field(True, description="False: a mail the recipient may opt out of (List-Unsubscribe).")
    mails: tuple[MailRule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> TimedRule:
        need: dict[str, tuple[str, ...]] = {
            "date": ("at",),
            "relative": ("at",),
            "absence": ("at", "window"),
            "recurring": ("weekday",),
        }
        for name in need[self.kind]:
            if getattr(self, name) is None:
                raise ValueError(f"a {self.kind} trigger needs `{name}`")
        if self.kind == "relative" and (self.offset is None) == (self.steps is None):
            raise ValueError("a relative trigger needs exactly one of `offset` and `steps`")
        if self.kind == "relative" and self.offset is not None and self.offset.unit == "minutes":
            raise ValueError("a relative offset is in days or hours")
        if self.steps is not None and (not self.steps or list(self.steps) != sorted(set(self.steps)) or self.steps[0] < 1):
            raise ValueError("steps are distinct, ascending day counts from 1")
        return self


TriggerRule = Annotated[EventRule | TimedRule, Field(discriminator="kind")]


class EntityUpdate(BaseModel):
    """How one event type changes an entity's state.

    ``copy`` takes event fields into the state: a name copies the field of that name, ``{name:
    path}`` the event field at the dotted path. ``copy_once`` does the same only where the state
    has no value yet (the first unanswered message). ``set`` writes literal values (``status:
    cancelled``; null clears). ``if`` limits the update to events whose fields match. ``forget``
    removes the entity and its timers: least data, once nothing can fire any more.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    when: dict[str, Any] = Field(default_factory=dict, alias="if")
    copy_: tuple[str | dict[str, str], ...] = Field((), alias="copy")
    copy_once: tuple[str | dict[str, str], ...] = ()
    set: dict[str, Any] = Field(default_factory=dict)
    forget: bool = False

    def copies(self, once: bool = False) -> dict[str, str]:
        """``state field -> event path``."""
        out: dict[str, str] = {}
        for item in self.copy_once if once else self.copy_:
            if isinstance(item, str):
                out[item] = item
            else:
                out.update(item)
        return out


class EntitySpec(BaseModel):
    """An entity whose state the pack keeps: a table fed by the events listed, keyed by ``id``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Dotted path to the entity id in every event listed (the Kafka key).")
    events: dict[str, EntityUpdate | tuple[EntityUpdate, ...]]

    def updates(self, type_name: str) -> tuple[EntityUpdate, ...]:
        found = self.events.get(type_name, ())
        return found if isinstance(found, tuple) else (found,)

    def fields(self) -> frozenset[str]:
        """Every state field some event of the entity writes."""
        out: set[str] = set()
        for type_name in self.events:
            for update in self.updates(type_name):
                out |= update.copies().keys() | update.copies(once=True).keys() | update.set.keys()
        return frozenset(out)


class PackFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pack: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    languages: tuple[str, ...] = Field(min_length=1)
    topics: dict[str, tuple[str, ...]] = Field(min_length=1)
    entities: dict[str, EntitySpec] = Field(default_factory=dict)
    triggers: dict[str, TriggerRule]

    @model_validator(mode="after")
    def _events_are_routed(self) -> PackFile:
        routed = {event for events in self.topics.values() for event in events}
        for trigger_id, rule in self.triggers.items():
            if isinstance(rule, EventRule) and rule.event not in routed:
                raise ValueError(f"trigger {trigger_id} fires on {rule.event}, which no topic of the pack carries")
            if isinstance(rule, TimedRule):
                if rule.entity not in self.entities:
                    raise ValueError(f"trigger {trigger_id} follows entity {rule.entity!r}, which the pack does not declare")
                bad = condition_problems(rule.when)
                if bad:
                    raise ValueError(f"trigger {trigger_id}: when: {'; '.join(bad)}")
        for name, entity in self.entities.items():
            for event in entity.events:
                if event not in routed:
                    raise ValueError(f"entity {name} is fed by {event}, which no topic of the pack carries")
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
    """Every trigger and entity of every loaded pack, indexed the ways the agents look them up."""

    def __init__(self, packs: Iterable[PackFile], samples: dict[str, dict[str, Any]] | None = None) -> None:
        self.packs = {p.pack: p for p in packs}
        self.samples = samples or {}
        self._all: list[Trigger] = []
        self._by_event: dict[str, list[Trigger]] = {}
        self._timed: dict[str, list[Trigger]] = {}
        self._feeds: dict[str, list[tuple[str, EntitySpec]]] = {}
        self._topic_of: dict[str, str] = {}
        for pack in self.packs.values():
            for aggregate, events in pack.topics.items():
                for event in events:
                    self._topic_of[event] = f"{pack.pack}.{aggregate}"
            for name, spec in pack.entities.items():
                for event in spec.events:
                    self._feeds.setdefault(event, []).append((f"{pack.pack}.{name}", spec))
            for trigger_id, rule in pack.triggers.items():
                trigger = Trigger(pack.pack, trigger_id, rule)
                self._all.append(trigger)
                if isinstance(rule, EventRule):
                    self._by_event.setdefault(rule.event, []).append(trigger)
                else:
                    self._timed.setdefault(f"{pack.pack}.{rule.entity}", []).append(trigger)

    def for_event(self, type_name: str) -> list[Trigger]:
        """The event triggers that fire on this event type."""
        return self._by_event.get(type_name, [])

    def feeds(self, type_name: str) -> list[tuple[str, EntitySpec]]:
        """``(table, entity)`` of every entity this event type updates; the table is ``<pack>.<entity>``."""
        return self._feeds.get(type_name, [])

    def timed_for(self, table: str) -> list[Trigger]:
        """The timed triggers that follow the entities of one table."""
        return self._timed.get(table, [])

    def tables(self) -> list[str]:
        return sorted({table for feeds in self._feeds.values() for table, _ in feeds})

    def entity(self, table: str) -> EntitySpec:
        pack, name = table.split(".", 1)
        return self.packs[pack].entities[name]

    def entity_of(self, trigger: Trigger) -> EntitySpec:
        """The entity a timed trigger follows."""
        assert isinstance(trigger.rule, TimedRule)
        return self.packs[trigger.pack].entities[trigger.rule.entity]

    def handles(self, type_name: str) -> bool:
        return type_name in self._by_event or type_name in self._feeds

    def triggers(self) -> list[Trigger]:
        """Every trigger, event and timed."""
        return list(self._all)

    def event_triggers(self) -> list[Trigger]:
        return [t for t in self._all if isinstance(t.rule, EventRule)]

    def timed_triggers(self) -> list[Trigger]:
        return [t for t in self._all if isinstance(t.rule, TimedRule)]

    def key_path(self, type_name: str) -> str:
        """Dotted path to the field of the event that is its Kafka key (the entity id)."""
        for trigger in self._by_event.get(type_name, []):
            return trigger.rule.entity
        for _table, spec in self._feeds.get(type_name, []):
            return spec.id
        raise KeyError(f"no pack handles {type_name}")

    def topic_suffixes(self) -> list[str]:
        """``<pack>.<aggregate>`` of every inbound topic; the prefix comes from the settings."""
        return sorted(set(self._topic_of.values()))

    def stateless_topic_suffixes(self) -> list[str]:
        """The inbound topics none of whose event types updates an entity: their events fire event
        triggers only, so a worker serving them needs no table (``TIDINGS_ROLE``, ``streams/app.py``)."""
        stateful = {self._topic_of[event] for event in self._feeds if event in self._topic_of}
        return sorted(set(self._topic_of.values()) - stateful)

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
