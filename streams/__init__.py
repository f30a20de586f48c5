"""Tidings: event-driven transactional email on Kafka.

The package is split by pipeline stage, each a sub-package of pure modules plus at most one
module of Faust wiring (``agents.py``):

- ``codecs``    Avro single-object encoding against the schemas kept in ``schemas/``.
- ``triggers``  rules as data (``packs/*.yaml``) and the pure decision of which mails an event means.
- ``rendering`` tenant brand, locale choice, Jinja2 sandbox, MIME assembly.
- ``delivery``  the sender protocol, its SES implementation and the delivery ledger.
- ``ingest``    the agent that ties decode -> triggers -> render -> outbound together.

``app.py`` is the one composition root; nothing connects to anything at import time.
"""
