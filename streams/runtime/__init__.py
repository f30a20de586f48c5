"""The runtime seam: the only package that knows faust-streaming and aiokafka.

Everything Tidings needs from its stream-processing framework goes through here, and the stage
packages (``ingest``, ``triggers``, ``delivery``, ``suppression``) see none of it:

- ``app.py``: the Faust app (exactly-once, RocksDB, no Faust web pages) and ``Wiring``, all the
  composition root (``streams/app.py``) uses: guarded agents, timers, partition hooks, pages.
- ``emit.py``: ``RecordContext``, a handler's view of its outputs: ``emit`` to a declared output
  on the input's partition, ``dead_letter``, ``after_commit``; the size check before a write.
- ``guard.py``: ``Guard``, under every agent: each record ends committed, dead-lettered or held
  (not acknowledged, worker stopped), never acknowledged without an outcome.
- ``agents.py``: the agent loop and ``TransactionalWriter`` (outputs in the input's transaction).
- ``tables.py``: the tables (entity state, timers, ledger) and their fast partition rows.
- ``transport.py``: the overrides of Faust's consumer, producer and buffer that make stops,
  restarts and rebalances safe under exactly-once.
- ``restore.py``: the tables' changelogs read at librdkafka's speed before Faust's recovery.
- ``groups.py``: the consumer group of each worker role (``TIDINGS_ROLE``) and the handover of
  offsets when a deployment splits into stateful workers and the stateless lane.
- ``commits.py``: when a partition's writes were committed (the sender's duplicate bound).
- ``status.py``: what the consumer and tables say about themselves (assignment, restore progress,
  lag), read without a Kafka call, for ``/readyz`` and the worker's own gauges.
- ``contract.py``: the pinned versions and fingerprints of every private method relied on.

Nothing here imports a stage package; stages import ``emit`` (types) and ``guard``
(``INFRASTRUCTURE``) only.
"""
