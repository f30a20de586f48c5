"""Tenant configuration at work: checks against the packs, the tenants topic, ``tidings-tenants``.

The tenant model (who the operator is, how their mail looks, which triggers are on) is
``streams/domain/tenants.py``.
"""
