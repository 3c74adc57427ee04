"""`fink-spark audit --repair`: the offsets an audit found missing read again from the
broker, with the job's decoding, filters and quarantine, and the table's duplicates kept once.

The missing ranges still on the broker are reprocessed as Kafka ranges into the job's
outputs, under a query of their own (`repair-<n>` in the checkpoint), and written down in
the ledger, so that the audit afterwards accounts for the alerts the filters rejected
again. What retention deleted since is reported, not invented. A repair cut short is run
again: the next audit finds only what is still missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pyspark.sql import SparkSession

from fink_spark.config.job import ICEBERG, ConsoleOutput, JobConfig
from fink_spark.errors import ConfigError
from fink_spark.kafka.client import watermarks
from fink_spark.run.audit import Audit
from fink_spark.run.inputs import KafkaRange
from fink_spark.run.reprocess import reprocess
from fink_spark.state import REPAIR_QUERY, CheckpointFiles
from fink_spark.table.catalog import Tables, alert_tables
from fink_spark.table.duplicates import remove_duplicate_records


@dataclass
class Repair:
    """What a repair did: the ranges read again, those gone from the broker, rows removed."""

    read_again: list[dict] = field(default_factory=list)  # {topic, partition, first, last}
    gone: list[dict] = field(default_factory=list)  # missing, and deleted from the broker since
    kept: int = 0  # alerts of the ranges read again that the filters kept
    duplicates_removed: int = 0

    def lines(self) -> list[str]:
        def spans(ranges: list[dict]) -> str:
            return ", ".join(f"{r['topic']}[{r['partition']}] {r['first']}-{r['last']}" for r in ranges)

        said = ["repair: nothing to read again"]
        if self.read_again:
            count = sum(r["last"] - r["first"] + 1 for r in self.read_again)
            said = [f"repair: read again {count:,} offsets ({spans(self.read_again)}): {self.kept:,} kept by the filters"]
        if self.gone:
            said.append(f"repair: {sum(r['last'] - r['first'] + 1 for r in self.gone):,} missing offsets are gone from "
                        f"the broker (retention deleted them): {spans(self.gone)}; they cannot be read again")
        if self.duplicates_removed:
            said.append(f"repair: {self.duplicates_removed:,} duplicated rows removed, one copy of each kept")
        return said


def repair(spark: SparkSession, config: JobConfig, found: Audit) -> Repair:
    """Read the missing ranges of `found` again into the job's outputs, and remove its duplicates."""
    if config.output.format != ICEBERG:
        raise ConfigError("fink-spark audit --repair writes into the job's Iceberg tables; a Parquet output's log of "
                          "batches is its stream's alone. Read the missing ranges into another folder with fink-spark "
                          "reprocess --kafka-range TOPIC:PARTITION=FIRST-END --output OTHER.")
    if config.kafka is None or not config.kafka.servers:
        raise ConfigError("fink-spark audit --repair reads the missing offsets from the broker: give --credentials "
                          "or --servers (or the job's configuration).")
    done = Repair()
    missing = found.as_json()["missing"]
    if missing:
        counts: dict[str, int] = {}
        for gap in missing:
            counts[gap["topic"]] = max(counts.get(gap["topic"], 0), gap["partition"] + 1)
        on_broker = watermarks(config.kafka, counts)
        spans: dict[str, dict[int, list[tuple[int, int]]]] = {}
        for gap in missing:
            low, high = on_broker[gap["topic"]][gap["partition"]]
            first, end = max(gap["first"], low), min(gap["last"] + 1, high)
            if gap["first"] < first:
                done.gone.append({**gap, "last": min(gap["last"], first - 1)})
            if end > first:
                spans.setdefault(gap["topic"], {}).setdefault(gap["partition"], []).append((first, end))
                done.read_again.append({**gap, "first": first, "last": end - 1})
        ranges = [KafkaRange(topic, {p: tuple(of_p) for p, of_p in parts.items()}) for topic, parts in spans.items()]
        if ranges:
            state = CheckpointFiles.at(config.output.checkpoint)
            number = sum(name.startswith(f"{REPAIR_QUERY}-") for name in state.names(""))
            quiet = replace(config, console=ConsoleOutput(enabled=False))  # the audit's report is the output
            done.kept = reprocess(spark, quiet, [], ranges, ranges[0].topic, query=f"{REPAIR_QUERY}-{number}")
    if any(p.duplicates for p in found.partitions):
        tables = Tables.of(config.output, config.survey.name)
        tables.open(spark)
        done.duplicates_removed = sum(remove_duplicate_records(spark, tables.name(name))
                                      for name in alert_tables(config.filters))
    return done
