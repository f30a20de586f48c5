"""The model every stage shares, below all of them: pure types and decisions, no I/O, no framework.

Imports only top-level ``streams`` modules (``errors``, ``outcomes``, ``settings``, ...) and itself;
every stage package may import it (``tests/unit/test_layout.py`` checks there is no cycle).

    address.py     mail addresses: what can be sent (IDN to punycode), the suppression identity
    tenants.py     a tenant's configuration (``Tenant``, ``TenantDirectory``, ``load_tenant``)
    conditions.py  trigger conditions over an event or entity state
    rules.py       rules as data: packs, the ``Catalog``, event and timed rules
    samples.py     the sample events packs ship (tests, preview, demo)
    identity.py    a mail's deterministic message id
    evaluate.py    ``Firing``: a rule that fired, and which rules an event fires
    schedule.py    when a timed trigger is due (pure calendar arithmetic)
    timers.py      ``Timer``: what a timed trigger plans for an entity
    projection.py  entity state: how events project onto it
    customers.py   customers who leave: which customers get no mail
    status.py      delivery status records
    token.py       the one-click unsubscribe token
"""
