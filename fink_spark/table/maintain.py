"""`fink-spark maintain`: keep a season of micro-batches compact, beside the running stream.

Each micro-batch appends small files and a snapshot. Maintenance, with Iceberg's own
procedures, rewrites the small files into files of a target size, merges the manifests,
expires old snapshots and removes files that no snapshot references. Every step is an
Iceberg commit that the stream's appends do not conflict with (a rewrite only replaces
files that are still live), so it runs while the stream runs, from another process.

The newest snapshot appended by each of the job's queries is never expired: it is how a
micro-batch replayed after a crash knows it was written (`fink_spark.table.catalog.newest_tagged`). A merged
table's files of its stream's merge window (and an hour more) are not rewritten: the
stream's next MERGE may delete rows in them, and would fail on files replaced meanwhile.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import Row, SparkSession

from fink_spark.errors import ConfigError
from fink_spark.table.catalog import MERGE_WINDOW, Tables, newest_tagged, properties_of
from fink_spark.table.warehouse import ALERTS, QUARANTINE, REJECTED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Maintenance:
    """What to keep: files of `target_file_mb`, snapshots newer than `snapshot_age_hours`
    (at least `retain_snapshots`), and any unreferenced file younger than `orphan_age_hours`
    (a file the stream is writing right now is not referenced yet)."""

    target_file_mb: int = 256
    snapshot_age_hours: float = 24.0
    retain_snapshots: int = 10
    orphan_age_hours: float = 24.0


ATTEMPTS = 5

MIN_ORPHAN_AGE_HOURS = 24  # Iceberg's remove_orphan_files refuses a shorter interval

# What a procedure meets when the stream committed meanwhile: its commit lost the race after
# Iceberg's own retries, or what it replaces changed (the stream's append merged manifests).
CONCURRENT_CHANGE = ("CommitFailedException", "ValidationException")


def _call(spark: SparkSession, statement: str) -> list[Row]:
    """Run one procedure; one that keeps meeting the stream's commits is run again from the
    table's new state, then reported."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return spark.sql(statement).collect()
        except Exception as error:
            if not any(kind in str(error) for kind in CONCURRENT_CHANGE):
                raise
            if attempt == ATTEMPTS:
                raise ConfigError(f"{statement.split('(')[0]} could not commit {ATTEMPTS} times: the stream's appends kept "
                                  "winning the race. Nothing was lost (an uncommitted rewrite changes nothing): run "
                                  "fink-spark maintain again.") from None
            log.warning("%s met a commit of the stream; trying again", statement.split("(")[0])
            time.sleep(attempt)
    return []


def maintain_table(spark: SparkSession, name: str, settings: Maintenance) -> dict[str, int]:
    """Compact, then expire and clean one table; returns what each step did."""
    procedures = name.split(".")[0] + ".system"
    target = settings.target_file_mb * 1024 * 1024
    rewritten = _call(spark,
        f"CALL {procedures}.rewrite_data_files(table => '{name}', options => map("
        f"'target-file-size-bytes', '{target}', 'min-input-files', '2', 'partial-progress.enabled', 'true')"
        f"{_outside_merge_window(spark, name)})"
    )[0].asDict()
    _call(spark, f"CALL {procedures}.rewrite_manifests(table => '{name}')")
    now_ms = int(time.time() * 1000)
    older_than = now_ms - int(settings.snapshot_age_hours * 3600 * 1000)
    newest = newest_tagged(spark, name)
    if newest is not None:  # keep the stream's newest append: a replayed batch looks for it
        older_than = min(older_than, newest[0])
    expired = _call(spark,
        f"CALL {procedures}.expire_snapshots(table => '{name}', older_than => {_timestamp(older_than)}, "
        f"retain_last => {settings.retain_snapshots})"
    )[0].asDict()
    orphans_before = now_ms - int(settings.orphan_age_hours * 3600 * 1000)
    orphans = _call(spark,
        f"CALL {procedures}.remove_orphan_files(table => '{name}', older_than => {_timestamp(orphans_before)})")
    return {
        "files rewritten": rewritten.get("rewritten_data_files_count", 0),
        "files written": rewritten.get("added_data_files_count", 0),
        "snapshots expired": sum(value for key, value in expired.items() if key.startswith("deleted_")),
        "orphan files removed": len(orphans),
    }


def _outside_merge_window(spark: SparkSession, name: str) -> str:
    """For a merged table, the procedure's argument that leaves the files its stream may
    still merge into (their rows' `ingest_time` within the window, and an hour more)."""
    window = properties_of(spark, name).get(MERGE_WINDOW)
    if window is None:
        return ""
    (since,) = spark.sql(f"SELECT current_timestamp() - INTERVAL '{window}' - INTERVAL 1 HOUR").first()
    return f", where => \"ingest_time < TIMESTAMP '{since:%Y-%m-%d %H:%M:%S.%f}'\""


def _timestamp(millis: int) -> str:
    return "TIMESTAMP '" + datetime.fromtimestamp(millis / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"


def maintain(spark: SparkSession, tables: Tables, settings: Maintenance) -> dict[str, dict[str, int]]:
    """Maintain each of a job's tables that exists."""
    tables.open(spark)
    done = {}
    for table in (ALERTS, QUARANTINE, REJECTED):
        name = tables.name(table)
        if spark.catalog.tableExists(name):
            done[name] = maintain_table(spark, name, settings)
            log.info("%s: %s", name, ", ".join(f"{count} {what}" for what, count in done[name].items()))
    return done
