"""Re-drive: dead letters back through the pipeline after a fix, still through the ledger.

``selection.py`` decides (pure: filters, which reasons may go back, where each record goes);
``cli.py`` is ``tidings-redrive``, which reads the dead-letter topic and republishes.
"""
