from __future__ import annotations

from pathlib import Path

import pytest

from streams.domain.tenants import TenantDirectory, load_tenant
from streams.errors import ConfigurationError

VALID = """\
tenant_id: acme
packs: [storage]
languages: [en, de]
default_language: en
time_zone: Europe/Berlin
brand: {name: Acme, primary_color: "#123456"}
sender: {from_address: mail@acme.example}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "acme.yaml"
    path.write_text(text)
    return path


def test_example_tenants_load(tenants: TenantDirectory) -> None:
    assert {t.tenant_id for t in tenants} >= {"lagerhaus-nord", "boxit-london"}


def test_a_valid_tenant_loads(tmp_path: Path) -> None:
    tenant = load_tenant(_write(tmp_path, VALID))
    assert tenant.brand.primary_color == "#123456"
    assert not tenant.is_enabled("storage/booking.created")
    assert tenant.is_enabled("storage/booking.created", default=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("#123456", "blue"), "brand.primary_color: .*'blue' is not a colour"),
        (("Europe/Berlin", "Mars/Olympus"), "time_zone: .*not an IANA time zone"),
        (("mail@acme.example", "mail-at-acme"), "sender.from_address: .*not an email address"),
        (("default_language: en", "default_language: fr"), "default_language 'fr' is not in languages"),
        (("[en, de]", "[english]"), "languages: .*'english' is not a language tag"),
        (("tenant_id: acme", "tenant_id: Acme Corp"), "tenant_id: "),
        (("packs: [storage]", "packs: [storage]\nsurprise: 1"), "surprise: Extra inputs"),
    ],
)
def test_an_invalid_tenant_is_refused_with_a_precise_message(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_tenant(_write(tmp_path, VALID.replace(*change)))


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="acme.yaml: not valid YAML"):
        load_tenant(_write(tmp_path, "tenant_id: [unclosed"))
