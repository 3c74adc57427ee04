"""`fink-spark audit`: every Kafka offset the job read, accounted for exactly once.

For each partition, the offsets from where the live job started to the end of its last
committed micro-batch, and those of the Kafka ranges reprocessed into its outputs (the
ledger, `fink_spark.run.ledger`), are each one of: a row of the alerts table (or of one
table at least, where filters name tables of their own), a record of the quarantine
(written, or noted in the checkpoint and not appended yet), an alert the filters
rejected, or a message retention deleted before the job read it (`skipped_offsets.json`).
Rejected alerts are the rejected table's rows when the job keeps them
(`output.table.rejected`); otherwise each batch's count of them: the offsets of a batch
found in neither table are its rejected ones when they are as many as the batch counted.
What is left is missing, reported as ranges; a row seen twice in a table is a duplicate.
(In a batch that lost rows and rejected others, with the rejected ids not kept, the ranges
hold both: the audit says how many of them the filters rejected; a repair,
`fink_spark.run.repair`, reads them again and its own counts tell them apart.)
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
from fink_spark.state import REPAIR_QUERY, SKIPPED_OFFSETS, STREAM_QUERY, CheckpointFiles
from fink_spark.table.catalog import alert_tables
from fink_spark.table.committed import read_committed
from fink_spark.table.warehouse import ALERTS, QUARANTINE, REJECTED, load_pyiceberg, warehouse_tables
from fink_spark.transform.decode import KAFKA_POSITION as POSITION

Partition = tuple[str, int]


@dataclass
class PartitionAudit:
    """One partition's offsets read, and what became of them."""

    topic: str
    partition: int
    first: int
    end: int  # the offset after the last one read
    read: int = 0  # offsets read between them (reprocessed ranges may leave some out)
    kept: int = 0
    quarantined: int = 0
    rejected: int = 0
    lost_to_retention: int = 0
    duplicates: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)  # [first, last] ranges
    unread: int | None = None  # on the broker after the last batch (with broker access)

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
class ReprocessedFiles:
    """Saved alerts reprocessed from files into the outputs: what the runs counted, and the
    rows with no Kafka position that the outputs hold."""

    runs: int
    records: int
    kept: int
    quarantined: int
    rejected: int
    in_table: int
    in_quarantine: int
    tables: int = 1  # filters that name tables: an alert is a row of each table it went to


    @property
    def complete(self) -> bool:
        return (self.kept, self.quarantined) == (self.in_table, self.in_quarantine)

    def line(self) -> str:
        table = "" if self.kept == self.in_table else f" (the table holds {self.in_table:,}: a run cut short?)"
        quarantine = "" if self.quarantined == self.in_quarantine else \
            f" (the quarantine holds {self.in_quarantine:,}: a run cut short?)"
        kept = f"{self.kept:,} kept" if self.tables == 1 else f"{self.kept:,} rows kept in {self.tables} tables"
        return (f"reprocessed files, {self.runs:,} runs: {self.records:,} records read, {kept}{table}, "
                f"{self.quarantined:,} quarantined{quarantine}, {self.rejected:,} rejected")


@dataclass
class Audit:
    partitions: list[PartitionAudit]
    rejected_by: dict[str, int]  # per filter: the rejected table's rows, or the ledger's counts
    retention: list[dict[str, Any]]  # {topic, partition, first, last}
    rejected_in_missing: int = 0  # rejected alerts of batches that also lost some: which ones is not known
    files: ReprocessedFiles | None = None

    @property
    def complete(self) -> bool:
        return not any(p.missing or p.duplicates for p in self.partitions) and (self.files is None or self.files.complete)

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
            "reprocessed_files": None if self.files is None else asdict(self.files),
        }

    def lines(self) -> list[str]:
        """The human report: a line per partition, the filters' rejections, the verdict."""
        rejected = [f"rejected by {label}: {count:,}" for label, count in self.rejected_by.items()]
        files = [] if self.files is None else [self.files.line()]
        return [*(partition.line() for partition in self.partitions), *files, *rejected, self.verdict()]

    def verdict(self) -> str:
        read = sum(p.read for p in self.partitions)
        if self.complete:
            parts = [f"each of the {read:,} offsets read"] if read or self.files is None else []
            parts += [] if self.files is None else [f"each of the {self.files.records:,} records of reprocessed files"]
            return f"complete: {' and '.join(parts)} is accounted for once"
        if not any(p.missing or p.duplicates for p in self.partitions):
            return ("INCOMPLETE: the outputs do not hold what reprocessing counted (a run cut short writes no count): "
                    "run the same reprocess again, it adds only what is not written yet")
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
        return load_pyiceberg(output.path, table).scan(selected_fields=POSITION).to_arrow()
    path = {ALERTS: output.path, QUARANTINE: output.quarantine, REJECTED: output.rejected_path}[table]
    if path is None:
        return pa.table({name: [] for name in POSITION})
    try:
        rows = read_committed(path, list(POSITION))
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


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[first, end) ranges merged where they meet or overlap, in order."""
    merged: list[tuple[int, int]] = []
    for first, end in sorted(ranges):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((first, end))
    return merged


def _rejected_by_count(entries: list[dict[str, Any]], found: dict[Partition, np.ndarray],
                       known: dict[Partition, np.ndarray]) -> tuple[dict[Partition, list[np.ndarray]], int]:
    """The offsets of each entry in no output (`found`, `known`), taken for its rejected alerts
    when they are as many as it counted; and the rejected alerts of the entries with others
    besides (their missing ranges hold them too)."""
    explained: dict[Partition, list[np.ndarray]] = {}
    among_missing = 0
    for entry in entries:
        gaps: dict[Partition, list[np.ndarray]] = {}
        for topic, partition, first, end in entry["ranges"]:
            key = (topic, partition)
            seen = np.concatenate([_within(found.get(key), first, end), _within(known.get(key), first, end)])
            offsets = np.arange(first, end)
            gaps.setdefault(key, []).append(offsets[~np.isin(offsets, seen)])
        count = sum(len(part) for parts in gaps.values() for part in parts)
        if count and count == entry["filtered"]:
            for key, parts in gaps.items():
                explained.setdefault(key, []).extend(parts)
        elif count:
            among_missing += entry["filtered"]
    return explained, among_missing


def audit(config: JobConfig, ends: dict[str, dict[int, int]] | None = None) -> Audit:
    """Account for every offset the job read (`ends`: the broker's end offsets, to say what is unread).

    The offsets read are those of the live stream's micro-batches and of the reprocessing
    runs of Kafka ranges (the ledger). Without the rejected table, an entry's rejected
    alerts are its offsets in no output, when they are as many as it counted; repairs are
    looked at first, so that the alerts a repair read again and the filters rejected again
    account for the gaps of the batches they came from.
    """
    output = config.output
    if output.deduplicate_gap:
        raise ConfigError("This job merges the copies of an alert (deduplicate): its table keeps one row per alert, "
                          "not one per offset, so it cannot be audited offset by offset.")
    state = CheckpointFiles.at(output.checkpoint)
    ledger = Ledger(state, STREAM_QUERY)
    batches, runs = ledger.entries(), ledger.runs()
    reads = batches + [run for run in runs if run["kind"] != REPAIR_QUERY]
    file_runs = [run for run in runs if run["inputs"] and not run["ranges"]]
    if not any(entry["ranges"] for entry in reads) and not file_runs:
        raise ConfigError(f"The checkpoint {output.checkpoint} has no ledger of what the job read: it has not "
                          "committed a batch yet, or ran with a fink-spark that kept none. Run the job, then audit.")
    # the filters' tables, and `alerts`, where a run before them wrote (a checkpoint whose filters gained tables)
    tables_rows = [_positions(config, name) for name in dict.fromkeys((*alert_tables(config.filters), ALERTS))]
    quarantine_rows = _positions(config, QUARANTINE)
    files = None
    if file_runs:
        records, kept_rows, quarantined_rows, filtered = (sum(run[key] for run in file_runs)
                                                          for key in ("records", "kept", "quarantined", "filtered"))
        routed = [item.label for item in config.filters if item.table is not None]
        if routed:  # an alert goes to each table whose filter it passed: a row in each
            kept_rows = sum(run["yields"].get(label, [0, 0])[1] for run in file_runs for label in routed)
        files = ReprocessedFiles(len(file_runs), records, kept_rows, quarantined_rows, filtered,
                                 sum(rows["kafka_offset"].null_count for rows in tables_rows),
                                 quarantine_rows["kafka_offset"].null_count, len(alert_tables(config.filters)))
    in_tables = [_by_partition(rows) for rows in tables_rows]
    kept = {key: np.unique(np.concatenate([offsets[key] for offsets in in_tables if key in offsets]))
            for key in set().union(*in_tables)}
    quarantined = _by_partition(quarantine_rows)
    rejected_rows = _positions(config, REJECTED) if output.rejected else None
    rejected = _by_partition(rejected_rows) if rejected_rows is not None else {}
    for (topic, partition, offset, _reason) in pending_positions(state):
        quarantined[(topic, partition)] = np.append(quarantined.get((topic, partition), np.empty(0, np.int64)), offset)
    retention = [{"topic": gap["topic"], "partition": gap["partition"], "first": gap["from_offset"], "last": gap["to_offset"] - 1}
                 for record in json.loads(state.read(SKIPPED_OFFSETS) or "[]") for gap in record["gaps"]]
    lost: dict[Partition, list[np.ndarray]] = {}
    for gap in retention:
        lost.setdefault((gap["topic"], gap["partition"]), []).append(np.arange(gap["first"], gap["last"] + 1))
    lost_offsets = {key: np.concatenate(parts) for key, parts in lost.items()}
    sides = (quarantined, rejected, lost_offsets)
    found = {key: np.unique(np.concatenate([offsets.get(key, np.empty(0, np.int64)) for offsets in (kept, *sides)]))
             for key in {*kept, *quarantined, *rejected, *lost_offsets}}

    # the rejected alerts of each entry, where no table keeps them (the batches' ranges do not
    # overlap; the repairs' lie within them)
    rejected_in_missing = 0
    if rejected_rows is None:
        repairs = [run for run in runs if run["kind"] == REPAIR_QUERY]
        by_repairs, _ = _rejected_by_count(repairs, found, {})
        rejected = {key: np.sort(np.concatenate(parts)) for key, parts in by_repairs.items()}
        by_reads, rejected_in_missing = _rejected_by_count(reads, found, rejected)
        for key, parts in by_reads.items():
            rejected[key] = np.sort(np.concatenate([rejected.get(key, np.empty(0, np.int64)), *parts]))

    audits: list[PartitionAudit] = []
    read: dict[Partition, list[tuple[int, int]]] = {}
    for entry in reads:
        for topic, partition, first, end in entry["ranges"]:
            read.setdefault((topic, partition), []).append((first, end))
    for key in sorted(read):
        topic, partition = key
        spans = _union(read[key])
        audited = PartitionAudit(topic, partition, spans[0][0], spans[-1][1])
        audits.append(audited)
        for first, end in spans:
            unique = _within(kept.get(key), first, end)
            parts = [unique, *(np.unique(_within(np.sort(offsets[key]) if key in offsets else None, first, end))
                               for offsets in (quarantined, rejected, lost_offsets))]
            audited.read += end - first
            audited.kept += len(unique)
            audited.duplicates += sum(len(rows) - len(np.unique(rows))
                                      for rows in (_within(offsets.get(key), first, end) for offsets in in_tables))
            audited.quarantined += len(parts[1])
            audited.rejected += len(parts[2])
            audited.lost_to_retention += len(parts[3])
            audited.missing += _gaps(np.unique(np.concatenate(parts)), first, end)
        if ends is not None and topic in ends:
            audited.unread = max(0, ends[topic].get(partition, audited.end) - audited.end)
    rejected_by: dict[str, int] = {}  # without the rejected table, each entry's counts (a repair's were its batch's)
    for entry in reads if rejected_rows is None else ():
        for label, count in entry.get("rejected_by", {}).items():
            rejected_by[label] = rejected_by.get(label, 0) + count
    if rejected_rows is not None and output.format == ICEBERG and REJECTED in warehouse_tables(output.path):
        reasons = load_pyiceberg(output.path, REJECTED).scan(selected_fields=("rejected_by",)).to_arrow()
        rejected_by = {str(k): int(v) for k, v in zip(*np.unique(np.array(reasons["rejected_by"].to_pylist(), dtype=str),
                                                               return_counts=True))}
    return Audit(audits, rejected_by, retention, rejected_in_missing, files)
