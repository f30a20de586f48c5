"""Handing rendered mails to the provider exactly once: MIME, the sender protocol, the ledger."""
