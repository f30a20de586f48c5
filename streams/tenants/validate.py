"""Is a tenant one Tidings can serve? Pure checks, shared by the CLI, the lint and the worker.

Two layers, each reported as ``(field, message)``:

- the model (``Tenant``): colours, time zone, addresses, language tags, the default language
  among those offered, ``HH:MM`` send time, no unknown keys;
- against the packs and templates (``pack_problems``): every pack exists, every trigger key names
  a trigger of a pack the tenant offers, every trigger the tenant has on has templates for
  every language the tenant offers, and a tenant with a non-transactional trigger on (one its
  recipients may opt out of) says where they unsubscribe (``unsubscribe``).

``tidings-tenants publish`` runs both on every file and publishes nothing unless all pass; the
worker runs both on every record of the tenants topic and ignores one that fails; the template lint
(``streams/tools/lint.py``) reports ``pack_problems`` for the example tenants with line numbers.

Template overrides (``Tenant.templates``) are checked in ``pack_problems`` too (``override_problems``):
known places only, a complete set in every offered language, and each part compiling with only
known merge tags (``streams/rendering/checks.py``'s ``check_override``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from streams.domain.rules import Catalog, TimedRule
from streams.domain.tenants import Tenant, read_tenant_file
from streams.domain.timers import param_problems
from streams.rendering.checks import check_override
from streams.rendering.render import PARTS

TENANT_FILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, order=True)
class TenantProblem:
    """One thing wrong with one tenant: where (file or record), which field, what."""

    source: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.field}: {self.message}"


def model_problems(data: Any) -> tuple[Tenant | None, list[tuple[str, str]]]:
    """Validate parsed data as a ``Tenant``: the tenant, or None and each field's problem."""
    if not isinstance(data, dict):
        return None, [("<root>", f"a tenant is a mapping of fields, not {type(data).__name__}")]
    try:
        return Tenant.model_validate(data), []
    except ValidationError as e:
        return None, _pydantic_problems(e)
    except Exception as e:  # noqa: BLE001 - RecursionError on nesting, anything else: a problem, never a crash
        return None, [("<root>", unexpected(e))]


def json_problems(value: bytes) -> tuple[Tenant | None, list[tuple[str, str]]]:
    """Validate a JSON document (a tenants-topic record value) as a ``Tenant``."""
    try:
        return Tenant.model_validate_json(value), []
    except ValidationError as e:
        return None, _pydantic_problems(e)
    except Exception as e:  # noqa: BLE001
        return None, [("<root>", unexpected(e))]


def unexpected(error: BaseException) -> str:
    """A check that failed in an unforeseen way, as a problem line: the type and a bounded message."""
    if isinstance(error, RecursionError):
        return "nested too deeply to check"
    return f"could not be checked: {type(error).__name__}: {str(error)[:200]}"


def safe_pack_problems(tenant: Tenant, catalog: Catalog, templates_dir: Path) -> list[tuple[str, str]]:
    """``pack_problems``, with any failure of the checks themselves reported as a problem.

    The worker's tenant check and the CLI call this: a tenant's content is hostile input, and a
    check that raises must reject that tenant, not stop the feed or print a traceback.
    """
    found: list[tuple[str, str]] = []
    try:
        for problem in pack_problems(tenant, catalog, templates_dir):
            found.append(problem)
    except Exception as e:  # noqa: BLE001
        found.append(("<root>", unexpected(e)))
    return found


def _pydantic_problems(error: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in error.errors():
        field = ".".join(map(str, err["loc"])) or "<root>"
        message = str(err["msg"]).removeprefix("Value error, ")
        out.append((field, message))
    return out


def pack_problems(tenant: Tenant, catalog: Catalog, templates_dir: Path) -> Iterator[tuple[str, str]]:
    """What the packs and templates say about a valid ``Tenant``; nothing when it can be served."""
    for pack in tenant.packs:
        if pack not in catalog.packs:
            yield "packs", f"unknown pack '{pack}'"
    keys = {t.key: t for t in catalog.triggers()}
    for key in tenant.triggers:
        trigger = keys.get(key)
        if trigger is None:
            yield f"triggers.{key}", f"unknown trigger '{key}'"
        elif trigger.pack not in tenant.packs:
            yield f"triggers.{key}", (
                f"trigger '{key}' belongs to pack '{trigger.pack}', which is not in packs {list(tenant.packs)}"
            )
        elif isinstance(trigger.rule, TimedRule):
            for message in param_problems(trigger, tenant.triggers[key].params):
                yield f"triggers.{key}.params", message
        elif tenant.triggers[key].params:
            yield f"triggers.{key}.params", f"{key} is an event trigger and takes no parameters"
    yield from override_problems(tenant, catalog, templates_dir)
    if tenant.unsubscribe is None:
        opt_out = [
            t.key for t in catalog.triggers()
            if t.pack in tenant.packs and not t.rule.transactional
            and tenant.is_enabled(t.key, t.rule.enabled_by_default)
        ]
        if opt_out:
            yield "unsubscribe", (
                f"{', '.join(opt_out)} send non-transactional mail, which must carry List-Unsubscribe: set "
                "unsubscribe.base_url (one-click) and/or unsubscribe.mailto, or turn those triggers off"
            )
    for trigger in catalog.triggers():
        if trigger.pack not in tenant.packs or not tenant.is_enabled(trigger.key, trigger.rule.enabled_by_default):
            continue
        for mail in trigger.rule.mails:
            for language in tenant.languages:
                folder = templates_dir / trigger.pack / mail.template / language
                missing = [
                    p for p in PARTS
                    if not (folder / p).is_file() and f"{trigger.pack}/{mail.template}/{language}/{p}" not in tenant.templates
                ]
                if missing:
                    yield "languages", (
                        f"tenant {tenant.tenant_id} offers '{language}' and has {trigger.key} on, "
                        f"but {_show(folder, templates_dir)}/ lacks {', '.join(missing)}"
                    )


def override_problems(tenant: Tenant, catalog: Catalog, templates_dir: Path) -> Iterator[tuple[str, str]]:
    """A tenant's own templates: known places, a complete set for every language, sound templates.

    A template set missing a language the tenant offers cannot be saved (seed 001), so an override
    of a mail must give all three parts in every offered language. Each part must compile and use
    only merge tags the trigger has: its event's fields, or its entity state's and ``timer`` for a
    timed trigger (the lint's checks, on text instead of files).
    """
    mails = {(t.pack, m.template): t for t in catalog.triggers() for m in t.rule.mails}
    overridden: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for key, source in sorted(tenant.templates.items()):
        parts = key.split("/")
        if len(parts) != 4 or parts[3] not in PARTS:
            yield f"templates.{key}", f"name it <pack>/<template>/<language>/<part>, part one of {', '.join(PARTS)}"
            continue
        pack, template, language, part = parts
        trigger = mails.get((pack, template))
        if trigger is None or pack not in tenant.packs:
            yield f"templates.{key}", f"no mail template '{template}' in a pack the tenant offers"
            continue
        if language not in tenant.languages:
            yield f"templates.{key}", f"'{language}' is not a language the tenant offers {list(tenant.languages)}"
            continue
        overridden.setdefault((pack, template), set()).add((language, part))
        try:
            messages = check_override(source, trigger, catalog, key, templates_dir)
        except Exception as e:  # noqa: BLE001 - one template's failure is that template's problem
            messages = [unexpected(e)]
        for message in messages:
            yield f"templates.{key}", message
    for (pack, template), have in sorted(overridden.items()):
        for language in tenant.languages:
            missing = [p for p in PARTS if (language, p) not in have]
            if missing:
                yield "templates", (
                    f"the override of {pack}/{template} lacks language '{language}' ({', '.join(missing)}); "
                    f"a template set must cover every language the tenant offers"
                )


def _show(folder: Path, templates_dir: Path) -> str:
    """``templates/<pack>/<template>/<lang>`` as the lint prints it."""
    try:
        return (Path(templates_dir.name) / folder.relative_to(templates_dir)).as_posix()
    except ValueError:
        return folder.as_posix()


def tenant_files(paths: Iterable[Path]) -> tuple[list[Path], list[TenantProblem]]:
    """The tenant files named: files as given, folders as their ``*.yaml`` / ``*.yml`` files."""
    files: list[Path] = []
    problems: list[TenantProblem] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TENANT_FILE_SUFFIXES)
            if not found:
                problems.append(TenantProblem(str(path), "<folder>", "no tenant files (*.yaml) in this folder"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(TenantProblem(str(path), "<file>", "no such file or folder"))
    return files, problems


def validate_files(
    paths: Sequence[Path], catalog: Catalog, templates_dir: Path
) -> tuple[list[Tenant], list[TenantProblem]]:
    """Every tenant of the files or folders named, and every problem with any of them.

    The tenants are only worth publishing when the problems are empty.
    """
    files, problems = tenant_files(paths)
    tenants: list[Tenant] = []
    seen: dict[str, Path] = {}
    for path in files:
        source = str(path)
        try:
            data = read_tenant_file(path)
        except (OSError, UnicodeDecodeError) as e:
            problems.append(TenantProblem(source, "<file>", f"cannot read: {e}"))
            continue
        except yaml.YAMLError as e:
            problems.append(TenantProblem(source, "<file>", f"not valid YAML: {e}".replace("\n", " ")))
            continue
        except Exception as e:  # noqa: BLE001 - e.g. RecursionError on deeply nested YAML
            problems.append(TenantProblem(source, "<file>", unexpected(e)))
            continue
        tenant, found = model_problems(data)
        problems.extend(TenantProblem(source, field, message) for field, message in found)
        if tenant is None:
            continue
        served = safe_pack_problems(tenant, catalog, templates_dir)
        problems.extend(TenantProblem(source, field, message) for field, message in served)
        if tenant.tenant_id in seen:
            problems.append(TenantProblem(source, "tenant_id", f"tenant {tenant.tenant_id} is also defined in {seen[tenant.tenant_id]}"))
            continue
        seen[tenant.tenant_id] = path
        tenants.append(tenant)
    return tenants, problems
