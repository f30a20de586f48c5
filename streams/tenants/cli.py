"""``tidings-tenants``: publish, show and remove tenants on the compacted tenants topic.

    tidings-tenants publish deploy/tenants/            every *.yaml of the folder (or the files named)
    tidings-tenants show [TENANT_ID]                   what the topic holds, as YAML
    tidings-tenants remove TENANT_ID                   a tombstone: workers forget the tenant

``publish`` checks every tenant first — the model (colours, time zone, addresses, languages, send
time) and the packs (known packs and triggers, templates in every language offered for every
trigger on; ``streams/tenants/validate.py``) — and writes nothing unless all of them pass;
otherwise it prints each problem as ``file: field: message`` and exits 1. Running workers pick up
what it writes within a second or so, without a restart.

The broker and the topic come from ``TIDINGS_KAFKA_BOOTSTRAP`` and ``TIDINGS_TOPIC_PREFIX``
(``<prefix>tenants``); the packs and templates checked against are the ones of this checkout
(``TIDINGS_TEMPLATES_DIR``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import yaml
from pydantic import ValidationError

from streams.domain.rules import Catalog
from streams.domain.tenants import Tenant
from streams.errors import ConfigurationError
from streams.settings import Settings
from streams.tenants import feed
from streams.tenants.validate import TenantProblem, validate_files
from streams.topics import TopicNames, ensure_tenants_topic


def check(paths: Sequence[Path], settings: Settings, catalog: Catalog | None = None) -> tuple[list[Tenant], list[TenantProblem]]:
    """The tenants of ``paths`` and every problem with them; no broker involved."""
    return validate_files(paths, catalog if catalog is not None else Catalog.load(), settings.templates_dir)


def publish(paths: Sequence[Path], settings: Settings) -> list[Tenant]:
    """Validate and publish the tenants of ``paths``; raise ``ConfigurationError`` listing every
    problem, having published nothing, if any tenant is invalid.

    The demo, the integration fixtures and the benchmark call this to seed a deployment with the
    example tenants (after ``ensure_topics``, before a worker starts).
    """
    tenants, problems = check(paths, settings)
    if problems:
        raise ConfigurationError("\n".join(map(str, problems)))
    _write(tenants, settings)
    return tenants


def _write(tenants: list[Tenant], settings: Settings) -> str:
    topic = TopicNames.from_settings(settings).tenants
    ensure_tenants_topic(settings)  # compacted; a broker's auto-created topic would not be
    feed.publish(settings.kafka_bootstrap, topic, tenants)
    return topic


def show(settings: Settings, tenant_id: str | None, out: TextIO) -> int:
    topic = TopicNames.from_settings(settings).tenants
    held = feed.read_tenants(settings.kafka_bootstrap, topic)
    tenants = sorted(held.directory, key=lambda t: t.tenant_id)
    if tenant_id is not None:
        tenants = [t for t in tenants if t.tenant_id == tenant_id]
        if not tenants:
            print(f"tidings-tenants: tenant {tenant_id} is not on {topic}", file=sys.stderr)
            return 1
    out.write(yaml.safe_dump_all(
        [t.model_dump(mode="json") for t in tenants], sort_keys=False, allow_unicode=True
    ))
    for rejected in held.rejected:
        if tenant_id is None or rejected.update.tenant_id == tenant_id:
            print(
                f"# ignored {topic}[{rejected.partition}]@{rejected.offset} ({rejected.update.tenant_id!r}): "
                f"{rejected.update.detail}", file=sys.stderr,
            )
    print(f"# {len(tenants)} tenant(s) on {topic}", file=sys.stderr)
    return 0


def remove(settings: Settings, tenant_id: str) -> int:
    topic = TopicNames.from_settings(settings).tenants
    if feed.read_tenants(settings.kafka_bootstrap, topic).directory.get(tenant_id) is None:
        print(f"tidings-tenants: tenant {tenant_id} is not on {topic}; nothing removed", file=sys.stderr)
        return 1
    feed.publish_tombstone(settings.kafka_bootstrap, topic, tenant_id)
    print(f"removed tenant {tenant_id} from {topic}")
    return 0


def main(argv: Sequence[str] | None = None, *, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidings-tenants", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_publish = commands.add_parser("publish", help="check tenant files and publish them, all or none")
    p_publish.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="tenant YAML files or folders of them")
    p_publish.add_argument("--check", action="store_true", help="only check; publish nothing, need no broker")
    p_show = commands.add_parser("show", help="print the tenants the topic holds")
    p_show.add_argument("tenant_id", nargs="?", metavar="TENANT_ID")
    p_remove = commands.add_parser("remove", help="remove a tenant (write a tombstone)")
    p_remove.add_argument("tenant_id", metavar="TENANT_ID")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the feed's per-record warnings: `show` prints them itself

    try:
        settings = settings if settings is not None else Settings()
    except ValidationError as e:
        print(f"tidings-tenants: invalid settings (TIDINGS_* environment variables):\n{e}", file=sys.stderr)
        return 2
    try:
        if args.command == "publish":
            tenants, problems = check(args.paths, settings)
            for problem in problems:
                print(problem)
            if problems:
                print(f"tidings-tenants: {len(problems)} problem(s); nothing published", file=sys.stderr)
                return 1
            if args.check:
                print(f"{len(tenants)} tenant(s) valid: {', '.join(t.tenant_id for t in tenants)}")
                return 0
            topic = _write(tenants, settings)
            print(f"published {len(tenants)} tenant(s) to {topic}: {', '.join(t.tenant_id for t in tenants)}")
            return 0
        if args.command == "show":
            return show(settings, args.tenant_id, sys.stdout)
        return remove(settings, args.tenant_id)
    except ConfigurationError as e:
        print(f"tidings-tenants: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
