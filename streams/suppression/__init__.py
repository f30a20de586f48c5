"""Suppression: addresses a tenant must not mail, from SES feedback, unsubscribes and operators.

    model.py     the list, its records and ``lookup`` (pure)
    feedback.py  SES events and Unsubscribed events -> suppression records (pure)
    feed.py      every worker follows ``<prefix>suppressions`` into a ``SuppressionList``
    agents.py    the Faust agent over ``<prefix>ses-events`` and ``<prefix>unsubscribes``
    web.py       POST /unsubscribe/<token> on the worker's web server
    cli.py       ``tidings-suppress``

The one-click unsubscribe token is ``streams/domain/token.py`` (rendering signs it, ``web.py`` reads it).
"""
