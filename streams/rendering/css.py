"""A rendered mail's CSS: inlined into style attributes, or left alone when there is nothing to inline.

Mail clients drop ``<style>`` blocks unpredictably (Gmail clips, Outlook ignores parts), so style
rules become style attributes (css-inline); at-rules (the layouts' dark-mode ``@media`` query) stay
a rule, since they cannot be inlined. Nothing is fetched: tenant templates must not reach the
network.

The packs' layout (``templates/_layouts/base.html``) carries only such an ``@media`` block, so for
the packs' mails the inliner applied nothing: it parsed and re-serialised the HTML (html5ever adds
``<tbody>``, orders attributes, writes U+00A0 as ``&nbsp;``, moves the at-rules to the top of
``<head>`` without their comments), about 0.07 ms, a tenth of a warm render then. ``StyleInliner.inline`` therefore
runs the inliner only on HTML that has something for it:

- **nothing to inline** (no ``<link``, and every ``<style`` opens a plain ``<style>`` element
  whose CSS, comments aside, is ``@media`` blocks only): the HTML is returned as rendered, each such
  block's CSS replaced by the text the inliner itself writes for it (comments dropped; worked out
  once per distinct block). The mail is the same document with the same style attributes and the
  same CSS; what differs is serialisation, which every HTML parser undoes, and where in ``<head>``
  the block sits (``tests/unit/test_css.py`` checks this for every mail of every example tenant).
  Text that only looks like such a block (inside a ``<textarea>`` or a comment) loses its CSS
  comments the same way;
- **anything else** (a tenant's own style rules, a ``<link>``, a ``<style>`` with attributes, CSS
  with strings, escapes or nesting this check does not read): the inliner, as before, its work
  bounded first by ``css_check`` (``streams/rendering/budget.py``).

The check is a superset test: every ``<style``/``<link`` an HTML parser could see is found, so
the inliner is skipped only when it would have applied nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import css_inline

from streams.rendering.budget import css_check

# A plain <style> element whose text has no "<"; any other (attributes, "<" in its text, an end
# tag the parser would take earlier such as "</style >", no end tag) is not one.
_STYLE_ELEMENT = re.compile(r"<[sS][tT][yY][lL][eE]>([^<]*)</[sS][tT][yY][lL][eE]>")
# Every place an HTML parser could open a style or link element (tag names are case-insensitive;
# spelt out rather than re.IGNORECASE, which makes these scans several times slower), in one
# scan: group 1 is set for a style, group 2 when that style is a plain element (_STYLE_ELEMENT),
# whose text then holds no other such place. Any other match sends the HTML to the inliner.
_OPENED = re.compile(r"<(?:([sS][tT][yY][lL][eE])(?:>([^<]*)</[sS][tT][yY][lL][eE]>)?|[lL][iI][nN][kK])")
_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
# CSS that is @media blocks of plain rules and nothing else; no strings or escapes. Linear:
# every repetition starts at a brace or at "@media".
_PLAIN = r"[^{}\"'\\]*"
_MEDIA_ONLY = re.compile(rf"\s*(?:@media{_PLAIN}\{{(?:{_PLAIN}\{{{_PLAIN}\}})*{_PLAIN}\}}\s*)*\Z")
# Distinct at-rule-only blocks a worker meets: one per layout, plus tenants' own. Larger blocks, or
# more of them, take the inliner's path.
_KNOWN_BLOCKS = 64
_BLOCK_CHARS = 8192


class StyleInliner:
    """css-inline as the renderer uses it, skipped for HTML that has nothing to inline."""

    def __init__(self, layouts: Iterable[str] = ()) -> None:
        """``layouts``: template sources whose static ``<style>`` blocks are worked out now, so that a
        worker whose first mails bring many blocks of their own still skips the inliner for these."""
        self._inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
        # CSS text of a <style> block -> the text the inliner writes for it, or None: not only @media.
        self._blocks: dict[str, str | None] = {}
        for source in layouts:
            for css in _STYLE_ELEMENT.findall(source):
                self._written(css)

    def inline(self, html: str) -> str:
        """``html`` with its CSS inlined; raises ``BudgetExceeded`` (css) or ``ValueError`` (CSS the inliner cannot parse)."""
        skipped = self._without_inlining(html)
        if skipped is not None:
            return skipped
        css_check(html)
        return self._inliner.inline(html)

    def _without_inlining(self, html: str) -> str | None:
        """The HTML as a client should get it, when the inliner would apply nothing to it; else None."""
        blocks = []
        for opened in _OPENED.finditer(html):
            if opened[1] is None:
                return None  # a <link>: the inliner removes stylesheet links
            if opened[2] is None:
                return None  # a <style> that is not a plain element
            blocks.append(opened)
        if not blocks:
            return html
        written = [self._written(block[2]) for block in blocks]
        if None in written:
            return None
        if all(block[2] == text for block, text in zip(blocks, written, strict=True)):
            return html
        # Each block's CSS replaced by the inliner's text, from the matches already made: a second
        # scan (re.sub) cost as much as the one before it.
        out: list[str] = []
        at = 0
        for block, text in zip(blocks, written, strict=True):
            out += (html[at:block.start()], "<style>", text or "", "</style>")  # never None here (above)
            at = block.end()
        out.append(html[at:])
        return "".join(out)

    def _written(self, css: str) -> str | None:
        """What the inliner writes for a block of only ``@media`` rules (None: not such a block)."""
        if css in self._blocks:
            return self._blocks[css]
        if len(css) > _BLOCK_CHARS or len(self._blocks) >= _KNOWN_BLOCKS:
            return None
        written: str | None = None
        if _MEDIA_ONLY.match(_COMMENT.sub(" ", css)):
            probe = f"<html><head><style>{css}</style></head><body></body></html>"
            css_check(probe)
            kept = _STYLE_ELEMENT.findall(self._inliner.inline(probe))
            written = kept[0] if len(kept) == 1 else None
        self._blocks[css] = written
        return written
