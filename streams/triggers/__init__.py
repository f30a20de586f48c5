"""Timed triggers at work: the engine, the due-time index, the tick and firings handlers, ``tidings-tick``.

Rules, conditions, timers and schedules (the pure decisions) are in ``streams/domain/``. Imports
neither faust nor boto3; below ``ingest`` (which calls the engine), above ``rendering`` and ``delivery``.
"""
