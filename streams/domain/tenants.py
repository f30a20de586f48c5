"""The typed tenant configuration, its loading from YAML files, and the live directory.

A tenant is one operator of one product (a self-storage company, a charge point operator).
Everything a mail takes from the operator comes from here: brand, sender identity, languages,
time zone, default send time, and which triggers are dispatched with which parameters. The models
are frozen: a changed tenant is a new object, never an edited one, so a render in flight sees one
consistent configuration.

Tenants are authored as YAML files (``deploy/tenants/*.yaml``), checked and published to the
compacted tenants topic by ``tidings-tenants publish`` (``streams/tenants/cli.py``); workers keep
a ``TenantDirectory`` up to date from that topic (``streams/tenants/feed.py``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streams.domain.address import AddressError, sendable
from streams.errors import ConfigurationError

_HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[A-Z]{2})?$")
# Characters that would end a URL inside a List-Unsubscribe header (<url>, <url>) or fold it.
_URL_UNSAFE = re.compile(r"[\s<>,\"\x00-\x1f\x7f]")


# Bounds of a tenant's trigger parameters (README "Tenants"): what a reminder, a dunning run or an
# absence check can sensibly ask for. Anything beyond is a typo or an attack, and an unbounded
# figure overflows date arithmetic at the tick.
PARAM_BOUNDS: dict[str, tuple[int, int]] = {
    "days": (1, 366),  # a reminder at most a year before or after its date
    "hours": (1, 24 * 31),
    "minutes": (1, 60 * 24 * 7),
}
MAX_STEPS = 12  # dunning steps, each a number of days within PARAM_BOUNDS["days"]
MAX_FIGURE = 1_000_000  # any other whole number a pack's conditions name (min_slots ...)
MAX_PARAM_TEXT = 100
# A tenant template (one part in one language) at most this long: the packs' longest is ~5 KB.
MAX_TEMPLATE_CHARS = 64 * 1024


def _param_problem(name: str, value: Any) -> str | None:
    """Why a trigger parameter is out of bounds, or None; the trigger's own checks come after."""
    if name in PARAM_BOUNDS and isinstance(value, int) and not isinstance(value, bool):
        low, high = PARAM_BOUNDS[name]
        if value > high:  # below low: the trigger's own check says what it takes
            return f"{name} must be between {low} and {high}, not {value}"
    elif name == "steps" and isinstance(value, list):
        low, high = PARAM_BOUNDS["days"]
        if len(value) > MAX_STEPS:
            return f"steps takes at most {MAX_STEPS} steps, not {len(value)}"
        if any(isinstance(v, int) and not isinstance(v, bool) and v > high for v in value):
            return f"each step must be between {low} and {high} days"
    elif isinstance(value, bool) or value is None:
        return None
    elif isinstance(value, int):
        if abs(value) > MAX_FIGURE:
            return f"{name} must be between -{MAX_FIGURE} and {MAX_FIGURE}, not a number that large"
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_FIGURE:
            return f"{name} must be a finite number between -{MAX_FIGURE} and {MAX_FIGURE}"
    elif isinstance(value, str):
        if len(value) > MAX_PARAM_TEXT:
            return f"{name} is longer than {MAX_PARAM_TEXT} characters"
    elif not isinstance(value, list):
        return f"{name} must be a number, a text or a list of days, not {type(value).__name__}"
    return None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _address(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as e:
        raise ValueError(f"{value!r} is not an email address: {e}") from None


def _sendable(value: str) -> str:
    """An address mail is sent from or replies go to: its sendable form (``streams/domain/address.py``)."""
    _address(value)
    try:
        return sendable(value)
    except AddressError as e:
        raise ValueError(f"{value!r} cannot be sent from or to (SES needs an ASCII local part): {e}") from None


class Brand(_Frozen):
    """What makes a mail look like the operator's."""

    name: str
    logo_url: str | None = None
    primary_color: str = "#1f4e79"
    accent_color: str = "#f2a900"
    postal_address: str = ""
    support_email: str | None = None
    footer: str = ""

    @field_validator("primary_color", "accent_color")
    @classmethod
    def _colour(cls, value: str) -> str:
        if not _HEX_COLOUR.match(value):
            raise ValueError(f"{value!r} is not a colour; write #rgb or #rrggbb")
        return value

    @field_validator("support_email")
    @classmethod
    def _support(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)


class SenderIdentity(_Frozen):
    """The verified SES identity mails go out from."""

    from_address: str
    from_name: str = ""
    reply_to: str | None = None
    configuration_set: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="SES configuration set the tenant's mails are sent with (event publishing, IP pool).",
    )

    @field_validator("from_address", "reply_to")
    @classmethod
    def _addresses(cls, value: str | None) -> str | None:
        return None if value is None else _sendable(value)


class UnsubscribeSetting(_Frozen):
    """Where recipients of the tenant's non-transactional mail unsubscribe (List-Unsubscribe, RFC 2369 / 8058)."""

    base_url: str | None = Field(
        None,
        description="Public https:// URL at which the workers' web port is reachable; mails link to "
        "<base_url>/unsubscribe/<token> and mail clients POST there (one-click, RFC 8058).",
    )
    mailto: str | None = Field(
        None, description="An address of the tenant's that takes unsubscribe requests by mail (RFC 2369)."
    )

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{value!r} is not an https:// URL (RFC 8058 one-click links must be https)")
        if not value.isascii() or parts.query or parts.fragment or parts.username or parts.password or _URL_UNSAFE.search(value):
            raise ValueError(f"{value!r}: write an ASCII base URL (IDNA host) without query, fragment, credentials, spaces or <>,\"")
        return value.rstrip("/")

    @field_validator("mailto")
    @classmethod
    def _mailbox(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _sendable(value)

    @model_validator(mode="after")
    def _something(self) -> UnsubscribeSetting:
        if self.base_url is None and self.mailto is None:
            raise ValueError("set base_url (one-click), mailto, or both")
        return self


class TriggerSetting(_Frozen):
    """Per-trigger switches, keyed ``pack/trigger`` in the tenant file."""

    enabled: bool = True
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="A timed trigger's parameters: the \"x days\" of a reminder ({days: 3}), the steps of a dunning "
        "trigger ({steps: [3, 10, 20]}), its send_time ('HH:MM'), or a figure its conditions name ({min_slots: 5}). "
        "Checked against the trigger when the tenant is published (streams/domain/timers.py, param_problems), "
        "and bounded here (PARAM_BOUNDS: days 1-366, hours 1-744, minutes 1-10080, at most 12 steps).",
    )

    @field_validator("params")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems = [p for name, v in value.items() if (p := _param_problem(str(name), v)) is not None]
        if problems:
            raise ValueError("; ".join(problems))
        return value


class Tenant(_Frozen):
    """One operator's complete configuration."""

    tenant_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    packs: tuple[str, ...]
    languages: tuple[str, ...]
    default_language: str
    time_zone: str = "UTC"
    default_send_time: dt.time = Field(
        dt.time(9, 0),
        description="Local time of day (in time_zone) at which date-based mails go out unless a trigger says "
        "otherwise (its send_time parameter); written HH:MM.",
    )
    brand: Brand
    sender: SenderIdentity
    unsubscribe: UnsubscribeSetting | None = Field(
        None, description="Required once the tenant has a non-transactional trigger on (reminders, newsletters)."
    )
    triggers: dict[str, TriggerSetting] = Field(default_factory=dict)
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="The tenant's own templates, '<pack>/<template>/<language>/<part>' -> Jinja2 source; "
        "in a tenant folder they are files under <tenant-file-stem>/templates/.",
    )

    @field_validator("templates")
    @classmethod
    def _template_sizes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, source in value.items():
            if len(source) > MAX_TEMPLATE_CHARS:
                raise ValueError(f"template {key[:100]!r} has {len(source)} characters; a template may have {MAX_TEMPLATE_CHARS}")
        return value

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("offer at least one language")
        for lang in value:
            if not _LANGUAGE.match(lang):
                raise ValueError(f"{lang!r} is not a language tag like 'de' or 'de-AT'")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Berlin") from None
        return value

    @field_validator("default_send_time", mode="before")
    @classmethod
    def _hh_mm(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted 10:30 as the number 630, which pydantic would take as seconds.
        if not isinstance(value, (str, dt.time)):
            raise ValueError(f"{value!r} is not a time of day; write it quoted, as 'HH:MM' (e.g. '09:00')")
        return value

    @field_validator("default_send_time")
    @classmethod
    def _time_of_day(cls, value: dt.time) -> dt.time:
        if value.tzinfo is not None:
            raise ValueError("write a local time of day such as '09:00', without a zone; time_zone says which zone")
        return value

    @model_validator(mode="after")
    def _default_offered(self) -> Tenant:
        if self.default_language not in self.languages:
            raise ValueError(f"default_language {self.default_language!r} is not in languages {list(self.languages)}")
        return self

    def is_enabled(self, trigger_key: str, default: bool = False) -> bool:
        """Whether mails of ``pack/trigger`` are dispatched; an explicit setting beats the pack's default."""
        setting = self.triggers.get(trigger_key)
        return default if setting is None else setting.enabled


class TenantDirectory:
    """All known tenants by id; updatable while readers read.

    The worker's tenant feed (one thread) calls ``put`` and ``remove`` as the tenants topic
    changes; the ingest agent calls ``get``. Each update replaces the whole mapping (copy on
    write) and a ``Tenant`` is frozen, so a reader sees either the old or the new tenant, never a
    mix, without taking a lock.
    """

    def __init__(self, tenants: Mapping[str, Tenant] | None = None) -> None:
        self._tenants: dict[str, Tenant] = dict(tenants or {})
        self._write = threading.Lock()

    def get(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    def put(self, tenant: Tenant) -> None:
        """Add or replace ``tenant`` (by its ``tenant_id``)."""
        with self._write:
            self._tenants = {**self._tenants, tenant.tenant_id: tenant}

    def remove(self, tenant_id: str) -> bool:
        """Forget a tenant; returns whether it was known."""
        with self._write:
            if tenant_id not in self._tenants:
                return False
            self._tenants = {k: v for k, v in self._tenants.items() if k != tenant_id}
            return True

    def __iter__(self) -> Iterator[Tenant]:
        return iter(list(self._tenants.values()))

    def __len__(self) -> int:
        return len(self._tenants)

    @classmethod
    def load(cls, folder: Path) -> TenantDirectory:
        """The tenants of a folder of YAML files (tools and tests; the worker reads the topic)."""
        if not folder.is_dir():
            raise ConfigurationError(f"tenant directory {folder} does not exist")
        tenants: dict[str, Tenant] = {}
        for path in sorted(folder.glob("*.yaml")):
            tenant = load_tenant(path)
            if tenant.tenant_id in tenants:
                raise ConfigurationError(f"{path}: tenant {tenant.tenant_id} is defined twice")
            tenants[tenant.tenant_id] = tenant
        return cls(tenants)


OVERRIDES_FOLDER = "templates"


def read_tenant_file(path: Path) -> object:
    """The tenant file's data with its template overrides folded in.

    Overrides are files next to the tenant file: ``acme.yaml`` takes
    ``acme/templates/<pack>/<template>/<language>/{subject.txt,body.html,body.txt}``. They travel
    inside the tenant record on the tenants topic, so every worker renders the same source.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    folder = path.parent / path.stem / OVERRIDES_FOLDER
    if isinstance(data, dict) and folder.is_dir():
        files = {f.relative_to(folder).as_posix(): f.read_text(encoding="utf-8") for f in sorted(folder.rglob("*")) if f.is_file()}
        data = {**data, "templates": {**files, **(data.get("templates") or {})}}
    return data


def load_tenant(path: Path) -> Tenant:
    try:
        return Tenant.model_validate(read_tenant_file(path))
    except yaml.YAMLError as e:
        raise ConfigurationError(f"{path}: not valid YAML: {e}") from e
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in e.errors())
        raise ConfigurationError(f"{path}: {problems}") from e
