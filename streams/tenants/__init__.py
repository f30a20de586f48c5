"""Tenant configuration: who the operator is, how their mail looks, which triggers are on."""
