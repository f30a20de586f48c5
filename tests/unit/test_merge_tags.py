"""docs/merge-tags.md is generated from the schemas and packs, and must not drift from them."""

from __future__ import annotations

from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import Catalog
from streams.rendering.merge_tags import REFERENCE_PATH, reference

CATALOG = Catalog.load()


def test_the_committed_reference_is_up_to_date(schemas: SchemaRepository) -> None:
    committed = REFERENCE_PATH.read_text(encoding="utf-8") if REFERENCE_PATH.is_file() else ""
    assert committed == reference(schemas, CATALOG), (
        "docs/merge-tags.md is stale: run .venv/bin/python -m streams.rendering.merge_tags and commit the result"
    )


def test_the_reference_covers_every_trigger_and_mail(schemas: SchemaRepository) -> None:
    text = reference(schemas, CATALOG)
    for trigger in CATALOG.triggers():
        assert f"### `{trigger.key}`" in text
        for mail in trigger.rule.mails:
            assert f"`templates/{trigger.pack}/{mail.template}/<language>/`" in text
    assert "| `customer.name` | string |" in text and "| `brand.primary_color` | string |" in text
