"""CSS inlining is skipped only when it would apply nothing, and then the mail is the same mail.

Every mail of every example tenant in every language it offers (the preview gallery's set: pack
samples, tenant overrides, each dunning step) is rendered twice: as the worker renders it, and
with the inliner run on every mail as before (``StyleInliner`` without its shortcut). Both are
parsed with the inliner's HTML parser (html5ever, nothing inlined) and must be the same document
with the same style attributes and the same CSS; the ``<style>`` block may sit elsewhere in
``<head>`` (the inliner moves at-rules to its top). HTML with style rules of its own still goes
through the inliner and its ``css_check`` bound.
"""

from __future__ import annotations

from html.parser import HTMLParser

import css_inline
import pytest

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.tenants import Tenant, TenantDirectory
from streams.rendering.budget import BudgetExceeded
from streams.rendering.css import StyleInliner
from streams.rendering.render import Renderer, Source
from streams.settings import REPO_ROOT
from streams.tools.preview import NOW, _mails, render_entry
from tests.hostile import CSS_BOMB, tenant_data

LAYOUT = (REPO_ROOT / "templates" / "_layouts" / "base.html").read_text(encoding="utf-8")
# Parses and writes HTML as the inliner does, and inlines nothing.
_PARSER = css_inline.CSSInliner(inline_style_tags=False, keep_style_tags=True, keep_link_tags=True, load_remote_stylesheets=False)


class _AlwaysInlining(StyleInliner):
    """The inliner on every mail, as before the shortcut."""

    def _without_inlining(self, html: str) -> str | None:
        return None


class _Counting(StyleInliner):
    def __init__(self, layouts: list[str]) -> None:
        super().__init__(layouts)
        self.skipped = 0

    def _without_inlining(self, html: str) -> str | None:
        out = super()._without_inlining(html)
        self.skipped += out is not None
        return out


_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())


class _Tree(HTMLParser):
    """The elements (attributes as a set), text and CSS of HTML that html5ever has already parsed and written."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.nodes: list[tuple[str, ...]] = []
        self.css: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self._open.append(tag)
        self.nodes.append(("<", tag, *sorted(f"{k}={v}" for k, v in attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self._open.pop() == tag
        self.nodes.append(("/", tag))

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1] == "style":
            self.css.append(" ".join(data.split()))
        elif data.strip() or "head" not in self._open:  # whitespace between <head>'s elements is not shown
            self.nodes.append(("text", data))


def _document(html: str) -> tuple[list[tuple[str, ...]], str]:
    """The document as a mail client builds it, without its <style> elements, and their CSS."""
    tree = _Tree()
    tree.feed(_PARSER.inline(html))
    tree.close()
    return [node for node in tree.nodes if node[1:2] != ("style",)], " ".join(tree.css)


def _every_mail(renderer: Renderer) -> dict[tuple[str, str, str, str, int], str]:
    catalog = Catalog.load()
    out = {}
    for tenant in sorted(TenantDirectory.load(REPO_ROOT / "deploy" / "tenants"), key=lambda t: t.tenant_id):
        for trigger, mail in _mails(catalog, tenant):
            for language in tenant.languages:
                for entry, page in render_entry(renderer, catalog, tenant, trigger, mail, language, NOW):
                    assert not entry.error, entry
                    out[(tenant.tenant_id, trigger.key, mail.role, language, entry.step)] = page
    return out


def test_every_mail_of_every_example_tenant_is_the_same_mail_without_the_inliner() -> None:
    worker = Renderer(REPO_ROOT / "templates")
    counting = _Counting([LAYOUT])
    worker._inliner = counting
    before = Renderer(REPO_ROOT / "templates")
    before._inliner = _AlwaysInlining()
    now, then = _every_mail(worker), _every_mail(before)
    assert now.keys() == then.keys() and len(now) > 150
    assert counting.skipped == len(now)  # no mail of the packs or example tenants has rules to inline
    for key, page in now.items():
        assert _document(page) == _document(then[key]), key
        assert "/* Inlined into style attributes" not in page  # the CSS is the inliner's text, comments dropped


@pytest.mark.parametrize(
    "html",
    [
        "<html><head><style>p { color: red }</style></head><body><p>x</p></body></html>",
        "<html><head><style>@media (x) { p { color: blue } } p { color: red }</style></head><body><p>x</p></body></html>",
        '<html><head><style type="text/css">@media (x) { p { color: blue } }</style></head><body><p>x</p></body></html>',
        '<html><head><STYLE>p { color: red }</STYLE></head><body><p>x</p></body></html>',
        "<html><head><style>@media (x) { p { color: blue } }</style><style>p { color: red }</style></head><body><p>x</p></body></html>",
        "<html><head><style>@media (x) { p { color: '}' } } p { color: red }</style></head><body><p>x</p></body></html>",
        "<html><head><style>@media (x) { p{color:blue} }</style ><p>x</p><style>p { color: red }</style></head><body></body></html>",
        '<html><head><link rel="stylesheet" href="a.css"></head><body><p>x</p></body></html>',
        "<html><head><style>@media (x) { p{color:blue} }</head><body><p>x</p></body></html>",
    ],
    ids=["rule", "media-and-rule", "attributes", "upper-case", "second-block", "string", "early-end-tag", "link", "unclosed"],
)
def test_html_with_anything_to_inline_goes_through_the_inliner(html: str) -> None:
    inliner = StyleInliner([LAYOUT])
    assert inliner.inline(html) == _AlwaysInlining().inline(html)
    assert inliner._without_inlining(html) is None


@pytest.mark.parametrize(
    "html",
    [
        "<p style=\"color:red;;  COLOR : blue !important\">x</p><table><tr><td>a</td></tr></table>",
        "<html><head><style>/* dark */ @media (prefers-color-scheme: dark) { .a { color: #fff !important; } }</style></head>"
        '<body><p class="a" style="color:#000">x</p></body></html>',
        "<html><head><STYLE>@media print { p { display: none } }</STYLE></head><body><p>x</p></body></html>",
        "<!-- <style>@media print { p { display: none } }</style> --><p>x</p>",
    ],
    ids=["no-style", "media-only", "upper-case", "in-a-comment"],
)
def test_html_with_nothing_to_inline_is_the_same_document(html: str) -> None:
    skipped = StyleInliner().inline(html)
    assert _document(skipped) == _document(_AlwaysInlining().inline(html))


def test_a_tenants_own_style_rules_are_still_inlined_and_bounded() -> None:
    inliner = StyleInliner([LAYOUT])
    out = inliner.inline("<html><head><style>p { color: red }</style></head><body><p>x</p></body></html>")
    assert '<p style="color: red;">x</p>' in out and "<style>" not in out
    with pytest.raises(BudgetExceeded, match="css"):
        inliner.inline("<style>" + "p{color:red}" * 5000 + "</style>" + "<p>x</p>" * 20000)
    with pytest.raises(BudgetExceeded, match="css"):
        inliner.inline("<style>@media (x) {" + "p{color:red}" * 5000 + "}</style>" + "<p>x</p>" * 20000)
    assert CSS_BOMB.startswith("<style>")  # the hostile-template tests' bomb takes this path too


def test_the_blocks_worked_out_per_worker_are_bounded() -> None:
    inliner = StyleInliner()
    for n in range(200):
        html = f"<html><head><style>@media (min-width: {n}px) {{ p {{ color: red }} }}</style></head><body><p>x</p></body></html>"
        assert _document(inliner.inline(html)) == _document(_AlwaysInlining().inline(html))
    assert len(inliner._blocks) == 64


def test_the_comparison_sees_an_inlined_rule_and_a_changed_text() -> None:
    html = "<html><head><style>p { color: red }</style></head><body><p>x</p></body></html>"
    assert _document(html)[0] != _document(_AlwaysInlining().inline(html))[0]
    page = "<html><head><title>t</title></head><body><p>a  b</p></body></html>"
    assert _document(page) != _document(page.replace("a  b", "a b"))


def test_a_tenant_override_with_its_own_style_rules_is_inlined_by_the_renderer() -> None:
    body = ('{% extends "_layouts/base.html" %}{% block content %}'
            '<style>.note { color: #b00020 }</style><p class="note">{{ booking_id }}</p>{% endblock %}')
    data = tenant_data()
    templates = {f"storage/booking.created/{lang}/{part}": body if part == "body.html" else "{{ booking_id }}"
                 for lang in data["languages"] for part in ("subject.txt", "body.html", "body.txt")}
    tenant = Tenant.model_validate({**data, "templates": templates})
    event = booking_created(tenant.tenant_id, 1)
    (firing,) = event_firings(BOOKING_CREATED, event, Catalog.load(), tenant)
    html = Renderer(REPO_ROOT / "templates").render(firing, tenant, event, Source("t", "e", NOW), NOW).record["html"]
    assert f'<p class="note" style="color: #b00020;">{event["booking_id"]}</p>' in html
    assert ".note" not in html and "prefers-color-scheme: dark" in html  # the rule inlined, the layout's @media kept
