"""What each micro-batch of the live stream read and what became of it, kept beside the
checkpoint for `fink-spark audit`.

Spark's checkpoint says where each batch ended (`offsets/<batch>`, the start being where
the batch before ended, or the query's initial offsets, `sources/0/0`), but keeps only
the last hundred batches; the ledger keeps, for every batch, the offsets read per
partition and the records the table's pass counted: kept, quarantined and rejected by
the filters. One small file per batch, written after the batch's outputs and before Spark
commits it, merged into `batches.json` every hundred batches. A batch replayed after a
crash that had written its table already is counted again for it (decoded and filtered,
nothing written): a crash costs one batch read twice, and the ledger stays whole.

A reprocessing run into the job's outputs adds one entry when it ends (`record_run`): its
inputs, the Kafka ranges it read, and its counts; so does each `fink-spark audit --repair`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fink_spark.kafka.positions import Offsets, spark_offsets
from fink_spark.sink.outputs import add_yields
from fink_spark.state import LEDGER, CheckpointFiles

MERGE_EVERY = 100
MERGED = f"{LEDGER}/batches.json"
RUNS = f"{LEDGER}/runs.json"
COUNTS = ("records", "kept", "quarantined", "filtered", "rejected_by", "yields")


def _last_json_line(text: str | None) -> Offsets:
    """The offsets of a Spark offsets file: its last line (the first are a version and metadata)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return spark_offsets(lines[-1]) if lines else {}


@dataclass(frozen=True)
class Ledger:
    """The ledger of one query's checkpoint (`query`: its folder in the checkpoint)."""

    state: CheckpointFiles
    query: str

    def ranges(self, batch_id: int) -> list[list[Any]]:
        """[topic, partition, first, end) of every partition the batch read from."""
        end = _last_json_line(self.state.read(f"{self.query}/offsets/{batch_id}"))
        start = _last_json_line(self.state.read(f"{self.query}/offsets/{batch_id - 1}" if batch_id
                                                else f"{self.query}/sources/0/0"))
        return [[topic, partition, start.get(topic, {}).get(partition, 0), last]
                for topic, parts in sorted(end.items()) for partition, last in sorted(parts.items())
                if last > start.get(topic, {}).get(partition, 0)]

    def record(self, batch_id: int, counts: dict[str, Any]) -> None:
        """Write down one batch, with the counts of the table's pass."""
        entry = {"batch": batch_id, "ranges": self.ranges(batch_id), **{key: counts[key] for key in COUNTS}}
        self.state.write(f"{LEDGER}/{batch_id}.json", json.dumps(entry))
        if batch_id % MERGE_EVERY == MERGE_EVERY - 1:
            self.merge()

    def merge(self) -> None:
        """Gather the batches' files into one (a crash midway leaves entries twice: read once)."""
        entries = self.entries()
        self.state.write(MERGED, json.dumps(entries))
        for name in self.state.names(LEDGER):
            if name.removesuffix(".json").isdigit():
                self.state.remove(f"{LEDGER}/{name}")

    def record_run(self, inputs: list[str], ranges: list[list[Any]], counts: dict[str, Any]) -> None:
        """Write down a finished reprocessing run, after its outputs (its kind, reprocess or
        repair, is its query's name: `reprocess`, `repair-<n>`)."""
        runs = self.runs()
        runs.append({"run": len(runs), "kind": self.query.partition("-")[0], "query": self.query, "inputs": inputs,
                     "ranges": ranges, **{key: counts[key] for key in COUNTS}})
        self.state.write(RUNS, json.dumps(runs))

    def runs(self) -> list[dict[str, Any]]:
        """The reprocessing runs and repairs written down, in order."""
        return json.loads(self.state.read(RUNS) or "[]")

    def yields(self) -> dict[str, list[int]]:
        """Each filter's [alerts that reached it, alerts it passed], over the live stream's batches."""
        totals: dict[str, list[int]] = {}
        for entry in self.entries():
            add_yields(totals, entry.get("yields", {}))
        return totals

    def entries(self) -> list[dict[str, Any]]:
        """Every batch's entry, by batch id."""
        found = {entry["batch"]: entry for entry in self._read_all()}
        return [found[batch] for batch in sorted(found)]

    def _read_all(self) -> Iterator[dict[str, Any]]:
        yield from json.loads(self.state.read(MERGED) or "[]")
        for name in self.state.names(LEDGER):
            if name.removesuffix(".json").isdigit():
                yield json.loads(self.state.read(f"{LEDGER}/{name}") or "{}")
