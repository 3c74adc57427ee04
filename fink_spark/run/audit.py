"""`fink-spark audit`: every Kafka offset the live job read, accounted for exactly once.

For each partition, the offsets from where the job started to the end of its last
committed micro-batch (the ledger, `fink_spark.run.ledger`) are each one of: a row of the
alerts table, a record of the quarantine (written, or noted in the checkpoint and not
appended yet), an alert the filters rejected, or a message retention deleted before the
job read it (`skipped_offsets.json`). Rejected alerts are the rejected table's rows when
the job keeps them (`output.table.rejected`); otherwise each batch's count of them: the
offsets of a batch found in neither table are its rejected ones when they are as many as
the batch counted. What is left is missing, reported as ranges; a table row seen twice is
a duplicate. (In a batch that lost rows and rejected others, with the rejected ids not
kept, the ranges hold both: the audit says how many of them the filters rejected.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from fink_spark.config.job import ICEBERG, JobConfig
from fink_spark.errors import ConfigError
from fink_spark.run.ledger import Ledger
from fink_spark.sink.quarantine import pending_positions
from fink_spark.state import SKIPPED_OFFSETS, STREAM_QUERY, CheckpointFiles
from fink_spark.table.committed import read_committed
from fink_spark.table.warehouse import ALERTS, QUARANTINE, REJECTED, load_pyiceberg, warehouse_tables

POSITION = ["topic", "kafka_partition", "kafka_offset"]
Partition = tuple[str, int]


@dataclass
class PartitionAudit:
    """One partition's offsets read, and what became of them."""

    topic: str
    partition: int
    first: int
    end: int  # the offset after the last one read
    kept: int = 0
    quarantined: int = 0
    rejected: int = 0
    lost_to_retention: int = 0
    duplicates: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)  # [first, last] ranges
    unread: int | None = None  # on the broker after the last batch (with broker access)

    @property
    def read(self) -> int:
        return self.end - self.first

    @property
    def missing_count(self) -> int:
        return sum(last - first + 1 for first, last in self.missing)

    def line(self) -> str:
        unread = "" if self.unread is None else f", {self.unread:,} not read yet"
        missing = f", {self.missing_count:,} MISSING ({_ranges_text(self.missing)})" if self.missing else ""
        duplicates = f", {self.duplicates:,} DUPLICATED" if self.duplicates else ""
        return (f"{self.topic}[{self.partition}] offsets {self.first:,} to {self.end - 1:,}: {self.kept:,} kept, "
                f"{self.quarantined:,} quarantined, {self.rejected:,} rejected, {self.lost_to_retention:,} lost to "
                f"retention{missing}{duplicates}{unread}")


@dataclass
class Audit:
    partitions: list[PartitionAudit]
    rejected_by: dict[str, int]  # per filter, when the rejected table is kept
    retention: list[dict[str, Any]]  # {topic, partition, first, last}
    rejected_in_missing: int = 0  # rejected alerts of batches that also lost some: which ones is not known

    @property
    def complete(self) -> bool:
        return not any(p.missing or p.duplicates for p in self.partitions)

    @property
    def missing_count(self) -> int:
        return sum(p.missing_count for p in self.partitions) - self.rejected_in_missing

    @property
    def accounted(self) -> int:
        return sum(p.read for p in self.partitions) - self.missing_count

    def as_json(self) -> dict[str, Any]:
        return {
            "complete": self.complete, "accounted": self.accounted,
            "read": sum(p.read for p in self.partitions), "missing_count": self.missing_count,
            "rejected_in_missing": self.rejected_in_missing,
            "missing": [{"topic": p.topic, "partition": p.partition, "first": first, "last": last}
                        for p in self.partitions for first, last in p.missing],
            "duplicates": sum(p.duplicates for p in self.partitions),
            "lost_to_retention": self.retention,
            "rejected_by": self.rejected_by,
            "partitions": [{k: v for k, v in asdict(p).items() if k != "missing"} for p in self.partitions],
        }

    def verdict(self) -> str:
        read = sum(p.read for p in self.partitions)
        if self.complete:
            return f"complete: each of the {read:,} offsets read is accounted for once"
        duplicates = sum(p.duplicates for p in self.partitions)
        among = (f" (the ranges shown also hold {self.rejected_in_missing:,} alerts the filters rejected: keep "
                 "output.table.rejected to tell them apart)") if self.rejected_in_missing else ""
        return (f"INCOMPLETE: {self.missing_count:,} of {read:,} offsets read are missing{among}, {duplicates:,} "
                "rows duplicated. Read the missing ranges again with fink-spark reprocess --kafka-range "
                "TOPIC:PARTITION=FIRST-LAST and the job's configuration.")


def _ranges_text(ranges: list[tuple[int, int]], shown: int = 3) -> str:
    text = ", ".join(f"{first}-{last}" if last > first else f"{first}" for first, last in ranges[:shown])
    return text + (f" and {len(ranges) - shown} more ranges" if len(ranges) > shown else "")


def _positions(config: JobConfig, table: str) -> pa.Table:
    """(topic, kafka_partition, kafka_offset) of every row of one of the job's outputs (none if it has none)."""
    output = config.output
    if output.format == ICEBERG:
        if table not in warehouse_tables(output.path):
            return pa.table({name: [] for name in POSITION})
        return load_pyiceberg(output.path, table).scan(selected_fields=tuple(POSITION)).to_arrow()
    path = {ALERTS: output.path, QUARANTINE: output.quarantine, REJECTED: output.rejected_path}[table]
    if path is None:
        return pa.table({name: [] for name in POSITION})
    try:
        rows = read_committed(path, POSITION)
    except ConfigError:
        return pa.table({name: [] for name in POSITION})
    return rows if rows.num_columns else pa.table({name: [] for name in POSITION})


def _by_partition(rows: pa.Table) -> dict[Partition, np.ndarray]:
    """Sorted offsets per (topic, partition); rows without Kafka positions (reprocessed files) left out."""
    if rows.num_rows == 0:
        return {}
    topics = np.array(rows["topic"].to_pylist(), dtype=object)
    partitions = rows["kafka_partition"].to_numpy(zero_copy_only=False)
    offsets = rows["kafka_offset"].to_numpy(zero_copy_only=False)
    known = ~(np.isnan(partitions.astype(float)) | np.isnan(offsets.astype(float)))
    found: dict[Partition, list[np.ndarray]] = {}
    for topic in set(topics[known]):
        of_topic = known & (topics == topic)
        for partition in np.unique(partitions[of_topic]):
            chosen = of_topic & (partitions == partition)
            found.setdefault((str(topic), int(partition)), []).append(offsets[chosen].astype(np.int64))
    return {key: np.sort(np.concatenate(parts)) for key, parts in found.items()}


def _within(offsets: np.ndarray | None, first: int, end: int) -> np.ndarray:
    if offsets is None:
        return np.empty(0, np.int64)
    return offsets[np.searchsorted(offsets, first):np.searchsorted(offsets, end)]


def _gaps(present: np.ndarray, first: int, end: int) -> list[tuple[int, int]]:
    """[first, last] ranges of [first, end) that `present` (sorted, unique) lacks."""
    bounds = np.concatenate([[first - 1], present, [end]])
    starts = np.flatnonzero(np.diff(bounds) > 1)
    return [(int(bounds[i] + 1), int(bounds[i + 1] - 1)) for i in starts]


def audit(config: JobConfig, ends: dict[str, dict[int, int]] | None = None) -> Audit:
    """Account for every offset the job read (`ends`: the broker's end offsets, to say what is unread)."""
    output = config.output
    if output.deduplicate_gap:
        raise ConfigError("This job merges the copies of an alert (deduplicate): its table keeps one row per alert, "
                          "not one per offset, so it cannot be audited offset by offset.")
    state = CheckpointFiles.at(output.checkpoint)
    entries = Ledger(state, STREAM_QUERY).entries()
    if not entries:
        raise ConfigError(f"The checkpoint {output.checkpoint} has no ledger of micro-batches: the job has not "
                          "committed a batch yet, or ran with a fink-spark that kept none. Run the job, then audit.")
    kept, quarantined = _by_partition(_positions(config, ALERTS)), _by_partition(_positions(config, QUARANTINE))
    rejected_rows = _positions(config, REJECTED) if output.rejected else None
    rejected = _by_partition(rejected_rows) if rejected_rows is not None else {}
    for (topic, partition, offset, _reason) in pending_positions(state):
        quarantined[(topic, partition)] = np.sort(np.append(quarantined.get((topic, partition), np.empty(0, np.int64)), offset))
    retention = [{"topic": gap["topic"], "partition": gap["partition"], "first": gap["from_offset"], "last": gap["to_offset"] - 1}
                 for record in json.loads(state.read(SKIPPED_OFFSETS) or "[]") for gap in record["gaps"]]
    lost = {}
    for gap in retention:
        lost.setdefault((gap["topic"], gap["partition"]), []).append(np.arange(gap["first"], gap["last"] + 1))
    lost_offsets = {key: np.concatenate(parts) for key, parts in lost.items()}

    audits: dict[Partition, PartitionAudit] = {}
    rejected_in_missing = 0
    for entry in entries:
        unaccounted: list[tuple[PartitionAudit, list[tuple[int, int]]]] = []
        for topic, partition, first, end in entry["ranges"]:
            key = (topic, partition)
            audited = audits.setdefault(key, PartitionAudit(topic, partition, first, end))
            audited.first, audited.end = min(audited.first, first), max(audited.end, end)
            rows = _within(kept.get(key), first, end)
            unique = np.unique(rows)
            audited.kept += len(unique)
            audited.duplicates += len(rows) - len(unique)
            parts = [unique, *(np.unique(_within(found.get(key), first, end)) for found in (quarantined, rejected, lost_offsets))]
            audited.quarantined += len(parts[1])
            audited.rejected += len(parts[2])
            audited.lost_to_retention += len(parts[3])
            gaps = _gaps(np.unique(np.concatenate(parts)), first, end)
            if gaps:
                unaccounted.append((audited, gaps))
        count = sum(last - first + 1 for _, gaps in unaccounted for first, last in gaps)
        if count and rejected_rows is None and entry.get("counted") and count == entry["filtered"]:
            for audited, gaps in unaccounted:  # the batch's rejected alerts, as many as it counted
                audited.rejected += sum(last - first + 1 for first, last in gaps)
        else:
            for audited, gaps in unaccounted:
                audited.missing += gaps
            if count and rejected_rows is None and entry.get("counted"):
                rejected_in_missing += entry["filtered"]
    rejected_by: dict[str, int] = {}
    if rejected_rows is not None and output.format == ICEBERG and REJECTED in warehouse_tables(output.path):
        reasons = load_pyiceberg(output.path, REJECTED).scan(selected_fields=("rejected_by",)).to_arrow()
        rejected_by = {str(k): int(v) for k, v in zip(*np.unique(np.array(reasons["rejected_by"].to_pylist(), dtype=str),
                                                               return_counts=True))}
    for (topic, partition), audited in audits.items():
        if ends is not None and topic in ends:
            audited.unread = max(0, ends[topic].get(partition, audited.end) - audited.end)
    return Audit([audits[key] for key in sorted(audits)], rejected_by, retention, rejected_in_missing)
