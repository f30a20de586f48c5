"""Turning a firing into a branded, localized mail: locale choice, Jinja2 sandbox, layout."""
