"""Turning a firing into a branded, localized mail: locale choice, Jinja2 sandbox, layout, and the
template checks (``checks.py``) the lint and the tenant checks share."""
