"""What Tidings relies on inside faust-streaming and aiokafka, pinned to the versions it was read on.

The runtime overrides or reads private methods of both libraries (``transport.py``,
``tables.py``, ``agents.py``, ``guard.py``). A new release can change any of them without notice,
so the versions are pinned exactly (``pyproject.toml``, ``constraints.txt``) and every method
listed below is fingerprinted: its signature and a hash of its source, as installed.
``tests/unit/test_runtime_contract.py`` fails when an installed version or any fingerprint
differs, and names what changed.

To upgrade faust-streaming or aiokafka:

1. change the pins in ``pyproject.toml`` and ``constraints.txt`` and reinstall (``make install``);
2. run ``python -m streams.runtime.contract``: it lists each listed method whose signature or
   source changed; read each change against the override or read that depends on it (the
   ``why`` below says where), and fix the runtime where the behaviour moved;
3. ``python -m streams.runtime.contract --write`` records the new fingerprints, and the whole
   test suite (the restart, rebalance and crash tests above all) must pass.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import sys
from pathlib import Path
from typing import Any

PINNED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
FINGERPRINTS = Path(__file__).with_name("contract.json")

# (module, attribute path, why Tidings depends on it)
RELIED_ON: tuple[tuple[str, str, str], ...] = (
    ("faust.streams", "Stream._py_aiter", "acks a record in its finally, even when the agent raised (guard.py holds it)"),
    ("faust.types.tuples", "Message.ack", "a record with a raised refcount is not acked (guard.hold)"),
    ("faust.types.tuples", "Message.incref", "guard.hold"),
    ("faust.transport.consumer", "TransactionManager.send", "the transactional id of a send: {app id}-{group}-{partition} (agents.TransactionalWriter)"),
    ("faust.transport.consumer", "Consumer._add_gap", "replaced: the record just received is not part of the gap; the tree is merged only when a new gap overlaps it"),
    ("faust.transport.consumer", "Consumer._drain_messages", "calls _add_gap(tp, r_offset + 1, offset)"),
    ("faust.transport.consumer", "Consumer._commit_offsets", "overridden: flush the changelog buffer, feed the CommitWatch"),
    ("faust.transport.consumer", "Consumer.perform_seek", "overridden: stop the flow when called"),
    ("faust.transport.consumer", "Consumer.wait_empty", "the graceful stop waits for unacked records, then commits"),
    ("faust.transport.consumer", "Consumer.on_stop", "overridden: a failed final commit must not hang the stop"),
    ("faust.transport.consumer", "Consumer.on_partitions_revoked", "extended: drops the revoked partitions' acked and committed offsets before the app's handler waits and commits, so TidingsConsumer does both first"),
    ("faust.app.base", "App._on_partitions_revoked", "stop flow, pause, clear, wait_empty, flush: what TidingsConsumer.on_partitions_revoked runs first"),
    ("faust.transport.consumer", "Consumer.commit", "returns without committing while another commit is under way (the extra final commit at a revocation)"),
    ("faust.transport.consumer", "Consumer._commit_livelock_detector", "overridden: the same check, at most once a second"),
    ("faust.transport.consumer", "Consumer.verify_all_partitions_active", "what the livelock check runs"),
    ("mode.worker", "exiting", "turns the worker's crash into sys.exit(1) with the crash as its __context__ (__main__.held_exit)"),
    ("mode.worker", "Worker._shutdown_loop", "re-raises the crash reason after the graceful stop (__main__.held_exit)"),
    ("mode.timers", "Timer.tick", "logs 'Timer %s is overlapping' (runtime.app.QuietCommitTimers drops it for the commit timers)"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._highwaters", "overridden: changelog ends asked from the broker"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.seek_to_committed", "overridden"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._fetch_records", "overridden: urgent topics' records first (transport.urgent_first)"),
    ("aiokafka.consumer.fetcher", "Fetcher.fetched_records", "urgent_first: an empty partition set means every partition; max_records fills partition by partition; timeout 0 does not wait"),
    ("faust.transport.consumer", "Consumer._wait_next_records", "one batch (broker_max_poll_records) is delivered before the next is asked for (urgent_first)"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._create_worker_consumer", "extended: fetch_min_bytes, fetch_max_wait and Faust's assignor (also without tables) set on the consumer"),
    ("aiokafka.consumer.fetcher", "Fetcher._get_actions_per_node", "reads _fetch_max_wait_ms and _fetch_min_bytes for every FetchRequest it builds (fetchwait.FetchPacing sets them after each batch)"),
    ("aiokafka.consumer.fetcher", "Fetcher._proc_fetch_request", "looked up on the instance by _fetch_requests_routine, returns true when an answer added records (wrapped: TidingsConsumerThread._pace_answers)"),
    ("aiokafka.consumer.fetcher", "Fetcher._fetch_requests_routine", "calls self._proc_fetch_request for each request and builds the next only after the answer"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer.start", "builds the Fetcher from _fetch_min_bytes and _fetch_max_wait_ms, the coordinator from _partition_assignment_strategy"),
    ("faust.transport.consumer", "TransactionManager._tps_to_active_tpgs", "needs Faust's assignor's topic groups, which an app without tables lacks (transport.TidingsConsumerThread)"),
    ("faust.transport.drivers.aiokafka", "Producer.send", "takes transactional_id; _trn_locks and _transaction_producers"),
    ("faust.transport.drivers.aiokafka", "Producer.commit_transactions", "overridden: open a transaction first if none; partitions committed concurrently"),
    ("faust.transport.drivers.aiokafka", "Producer.flush", "overridden: drains the buffer up to the commit instead of ProducerBuffer.flush"),
    ("faust.transport.drivers.aiokafka", "Producer.begin_transaction", "creates _transaction_producers and _trn_locks"),
    ("faust.transport.drivers.aiokafka", "Producer._settings_extra", "extended: retry_backoff_ms (every producer, the transactional ones too)"),
    ("faust.transport.drivers.aiokafka", "Producer._new_producer", "builds each producer from _settings_default, _settings_auth and _settings_extra; extended: its client's requests counted"),
    ("aiokafka.client", "AIOKafkaClient.send", "every request of a client goes through it (transport.count_requests wraps it on the worker's producers' client and the consumer's _client)"),
    ("aiokafka.producer.sender", "AddOffsetsToTxnHandler.handle_response", "CONCURRENT_TRANSACTIONS retried after retry_backoff_ms (transport.TidingsProducer._settings_extra)"),
    ("faust.transport.producer", "ProducerBuffer._send_pending", "overridden: ChangelogBatch entries"),
    ("faust.transport.producer", "ProducerBuffer.put", "overridden: counts for drain"),
    ("faust.transport.producer", "ProducerBuffer._handle_pending", "the task that calls _send_pending"),
    ("faust.stores.rocksdb", "Store._db_for_partition", "PartitionRows reads and writes a partition's database"),
    ("faust.stores.rocksdb", "Store._iteritems", "partition_items reads _dbs like this"),
    ("faust.tables.base", "Collection._verify_source_topic_partitions", "overridden by CoPartitionedTable"),
    ("faust.tables.base", "Collection.persisted_offset", "overridden by RestoredTable"),
    ("faust.assignor.partition_assignor", "PartitionAssignor.group_for_topic", "TransactionalWriter and send_changelog_batch"),
    ("faust.app.base", "App._new_web", "overridden: a web driver without Faust's own pages"),
    ("faust.web.base", "Web._enabled_blueprints", "reads the four blueprint lists ClosedWeb empties"),
    ("faust.transport.consumer", "Consumer._new_offset", "status.py reads _committed_offset as the next offset to read (batch[-1] + 1)"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.highwater", "status.py: lag against the high watermark / last stable offset"),
    ("faust.tables.recovery", "Recovery.active_remaining", "status.py: restore progress from active_highwaters and active_offsets"),
    ("faust.tables.recovery", "Recovery._build_offsets", "extended (restore.py): sets where each active changelog partition is read from; a later offset is read past"),
    ("faust.tables.recovery", "Recovery._restart_recovery", "calls _build_offsets for actives after _build_highwaters, under broker_request_timeout (restore.py's budget)"),
    ("faust.tables.recovery", "Recovery._seek_offsets", "seeks to the offset _build_offsets set: the fast restore's end"),
    ("faust.tables.manager", "TableManager.recovery.fget", "overridden by TidingsTableManager"),
    ("faust.stores.rocksdb", "Store.apply_changelog_batch", "restore.py writes what it writes: raw keys, tombstones deleted, the offset reached"),
    ("faust.stores.rocksdb", "Store.persisted_offset", "the offset key restore.py writes (str(offset).encode())"),
    ("faust.tables.recovery", "Recovery._set_recovery_ended", "status.py: in_recovery and completed say the tables are restored"),
    ("faust.tables.manager", "TableManager.changelog_topics.fget", "status.py: changelog partitions are not counted as consumer lag"),
    ("aiokafka.producer.producer", "AIOKafkaProducer.create_batch", "ChangelogBatch records appended as record batches"),
    ("aiokafka.producer.producer", "AIOKafkaProducer.send_batch", "ChangelogBatch"),
    ("aiokafka.producer.producer", "AIOKafkaProducer.send", "short ChangelogBatch runs join the open batch (transport._send_batches)"),
    ("aiokafka.producer.message_accumulator", "MessageAccumulator.add_batch", "waits for the previous batch of a partition: why short runs use send"),
    ("faust.transport.producer", "ProducerBuffer.__init__", "pending is an asyncio.Queue whose deque _take_following_batches peeks"),
    ("aiokafka.producer.transaction_manager", "TransactionManager.__init__", "_txn_manager.state read by _transaction_ended"),
)


def _resolve(module: str, path: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


_LITERALS = (type(None), bool, int, float, str, bytes)


class _Object:
    def __repr__(self) -> str:
        return "<object>"


_OBJECT = _Object()


def _stable_signature(obj: Any) -> str:
    """The signature with each default that is not a literal shown as ``<object>``: a default such as
    mode's ``file=sys.stderr`` has a repr and even a type that depend on how the process was
    started (pytest replaces stderr), and the source hash covers the default anyway."""
    sig = inspect.signature(obj)
    params = [
        p if p.default is inspect.Parameter.empty or isinstance(p.default, _LITERALS)
        else p.replace(default=_OBJECT)
        for p in sig.parameters.values()
    ]
    return str(sig.replace(parameters=params))


def fingerprint(module: str, path: str) -> dict[str, str]:
    obj = _resolve(module, path)
    obj = getattr(obj, "fun", obj)  # mode's @Service.task wraps the method in a ServiceTask
    obj = inspect.unwrap(obj)
    source = inspect.getsource(obj)
    return {
        "signature": _stable_signature(obj),
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
    }


def installed_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in PINNED}


def current() -> dict[str, Any]:
    return {
        "versions": installed_versions(),
        "methods": {f"{module}:{path}": fingerprint(module, path) for module, path, _ in RELIED_ON},
    }


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What changed between the recorded fingerprints and the installed libraries, one line each."""
    out = [
        f"{name} is {now['versions'].get(name)}, the runtime was written against {version}"
        for name, version in recorded["versions"].items()
        if now["versions"].get(name) != version
    ]
    why = {f"{module}:{path}": reason for module, path, reason in RELIED_ON}
    for key, fp in now["methods"].items():
        old = recorded["methods"].get(key)
        if old is None:
            out.append(f"{key}: not fingerprinted yet (run python -m streams.runtime.contract --write)")
        elif old["signature"] != fp["signature"]:
            out.append(f"{key}: signature {old['signature']} -> {fp['signature']} ({why[key]})")
        elif old["source_sha256"] != fp["source_sha256"]:
            out.append(f"{key}: source changed ({why[key]})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.runtime.contract", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="record the installed fingerprints")
    args = parser.parse_args(argv)
    now = current()
    if args.write:
        FINGERPRINTS.write_text(json.dumps(now, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {FINGERPRINTS}")
        return 0
    changed = differences(json.loads(FINGERPRINTS.read_text(encoding="utf-8")), now)
    for line in changed:
        print(line)
    print("no change" if not changed else f"{len(changed)} change(s)")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
