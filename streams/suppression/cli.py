"""``tidings-suppress``: list, add and lift suppressions on the compacted suppressions topic.

    tidings-suppress list [--tenant TENANT_ID]                  what the topic holds, one line each
    tidings-suppress add TENANT_ID ADDRESS --reason manual      stop mailing an address
    tidings-suppress remove TENANT_ID ADDRESS                   a tombstone: mail it again

``add`` refuses an address that is no email address and a tenant the tenants topic does not hold;
``remove`` one that is not suppressed. Running workers apply a change within a second or so. An
unsubscribe (``--reason unsubscribe``) stops only non-transactional mail; every other reason
stops all of the tenant's mail to the address.

The broker and the topics come from ``TIDINGS_KAFKA_BOOTSTRAP`` and ``TIDINGS_TOPIC_PREFIX``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from pydantic import ValidationError

from streams.errors import ConfigurationError
from streams.settings import Settings
from streams.suppression.feed import SuppressionWriter, read_suppressions
from streams.suppression.model import REASONS, Suppression, normalize_address, scope_for
from streams.tenants.feed import read_tenants
from streams.topics import TopicNames, ensure_suppressions_topic


def list_entries(settings: Settings, tenant_id: str | None, out: TextIO) -> int:
    topic = TopicNames.from_settings(settings).suppressions
    held = read_suppressions(settings.kafka_bootstrap, topic)
    entries = sorted(
        (s for s in held.entries if tenant_id is None or s.tenant_id == tenant_id), key=lambda s: (s.tenant_id, s.address)
    )
    for s in entries:
        out.write(f"{s.tenant_id}\t{s.address}\t{s.reason}\t{s.scope}\t{s.at.isoformat()}\t{s.detail}\n")
    print(f"# {len(entries)} suppression(s) on {topic}" + (f", {held.rejected} unusable record(s) ignored" if held.rejected else ""),
          file=sys.stderr)
    return 0


def add(settings: Settings, tenant_id: str, address: str, reason: str, detail: str) -> int:
    normalized = normalize_address(address)
    if normalized is None:
        print(f"tidings-suppress: {address!r} is not an email address; nothing written", file=sys.stderr)
        return 1
    names = TopicNames.from_settings(settings)
    if read_tenants(settings.kafka_bootstrap, names.tenants).directory.get(tenant_id) is None:
        print(f"tidings-suppress: tenant {tenant_id} is not on {names.tenants}; nothing written", file=sys.stderr)
        return 1
    entry = Suppression(
        tenant_id, normalized, reason, scope_for(reason), dt.datetime.now(dt.timezone.utc),  # type: ignore[arg-type]  # reason: argparse choices=REASONS
        detail or "added by an operator",
    )
    ensure_suppressions_topic(settings)
    _write(settings, lambda w: w.suppress([entry]))
    print(f"suppressed {normalized} for {tenant_id} ({reason}, {entry.scope}) on {names.suppressions}")
    return 0


def remove(settings: Settings, tenant_id: str, address: str) -> int:
    topic = TopicNames.from_settings(settings).suppressions
    normalized = normalize_address(address) or address
    if read_suppressions(settings.kafka_bootstrap, topic).entries.get(tenant_id, normalized) is None:
        print(f"tidings-suppress: {normalized} is not suppressed for {tenant_id}; nothing written", file=sys.stderr)
        return 1
    _write(settings, lambda w: w.lift(tenant_id, normalized))
    print(f"lifted the suppression of {normalized} for {tenant_id} on {topic}")
    return 0


def _write(settings: Settings, action) -> None:
    writer = SuppressionWriter(settings.kafka_bootstrap, TopicNames.from_settings(settings).suppressions)
    try:
        action(writer)
    finally:
        writer.close()


def main(argv: Sequence[str] | None = None, *, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidings-suppress", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_list = commands.add_parser("list", help="print the suppressions the topic holds (tab-separated)")
    p_list.add_argument("--tenant", metavar="TENANT_ID", help="only this tenant's")
    p_add = commands.add_parser("add", help="suppress an address for a tenant")
    p_add.add_argument("tenant_id", metavar="TENANT_ID")
    p_add.add_argument("address", metavar="ADDRESS")
    p_add.add_argument("--reason", required=True, choices=REASONS, help="unsubscribe stops only non-transactional mail")
    p_add.add_argument("--detail", default="", help="a note for the next operator (no personal data)")
    p_remove = commands.add_parser("remove", help="lift a suppression (write a tombstone)")
    p_remove.add_argument("tenant_id", metavar="TENANT_ID")
    p_remove.add_argument("address", metavar="ADDRESS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the feeds' per-record warnings: list reports the count itself

    try:
        settings = settings if settings is not None else Settings()
    except ValidationError as e:
        print(f"tidings-suppress: invalid settings (TIDINGS_* environment variables):\n{e}", file=sys.stderr)
        return 2
    try:
        if args.command == "list":
            return list_entries(settings, args.tenant, sys.stdout)
        if args.command == "add":
            return add(settings, args.tenant_id, args.address, args.reason, args.detail)
        return remove(settings, args.tenant_id, args.address)
    except ConfigurationError as e:
        print(f"tidings-suppress: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
