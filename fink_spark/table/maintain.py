"""`fink-spark maintain`: keep a season of micro-batches compact, beside the running stream.

Each micro-batch appends small files and a snapshot. Maintenance, with Iceberg's own
procedures, rewrites the small files into files of a target size, merges the manifests,
expires old snapshots and removes files that no snapshot references. Every step is an
Iceberg commit that the stream's appends do not conflict with (a rewrite only replaces
files that are still live), so it runs while the stream runs, from another process.

An alerts table written before fink-spark kept each alert's position (`ra`, `dec`,
`_healpix_29`) gets it first, from the alerts' own coordinates, without reading Kafka
again: one MERGE of the rows that lack it. Closed nights (before today, UTC) of a table
ordered on the sky are then rewritten whole, sorted by `_healpix_29`, so that each file
covers a compact region of the sky: each micro-batch's files are sorted, but each covers
the whole sky. A night is rewritten while its files' ranges of `_healpix_29` overlap (or
do not say), so once only; the current night is only compacted.

The newest snapshot appended by each of the job's queries is never expired: it is how a
micro-batch replayed after a crash knows it was written (`fink_spark.table.catalog.newest_tagged`). A merged
table's files of its stream's merge window (and an hour more) are not rewritten: the
stream's next MERGE may delete rows in them, and would fail on files replaced meanwhile.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import Row, SparkSession

from fink_spark.errors import ConfigError
from fink_spark.surveys import Survey
from fink_spark.table.catalog import ACCEPT_ANY_SCHEMA, MERGE_WINDOW, Tables, newest_tagged, properties_of, property_set
from fink_spark.table.warehouse import ALERTS, QUARANTINE, REJECTED
from fink_spark.transform.decode import OBS_TIME, has_column
from fink_spark.transform.sky import HEALPIX, POSITION_COLUMNS, with_position

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


def fill_positions(spark: SparkSession, name: str, survey: Survey) -> int:
    """Give the alerts that lack it their position (a table written before fink-spark kept
    one); returns how many rows got it."""
    table = spark.table(name)
    coordinates = (survey.filters.ra, survey.filters.dec)
    if not all(has_column(table.schema, column) for column in (*coordinates, HEALPIX)):
        return 0
    lacking = table.where(f"{HEALPIX} IS NULL AND {coordinates[0]} IS NOT NULL AND {coordinates[1]} IS NOT NULL")
    keys = [column for column in ("topic", "kafka_partition", "kafka_offset", survey.id_column) if column in table.columns]
    holding = [column for column in dict.fromkeys(path.split(".")[0] for path in coordinates) if column not in keys]
    found = lacking.select(*keys, *holding).transform(with_position(survey, lambda column: True)) \
        .select(*keys, *POSITION_COLUMNS).localCheckpoint()
    count = found.count()
    if count:
        found.createOrReplaceTempView("fink_spark_positions")
        matched = " AND ".join(f"t.{key} <=> s.{key}" for key in keys)  # files reprocessed have no Kafka positions
        updates = ", ".join(f"t.{column} = s.{column}" for column in POSITION_COLUMNS)
        with property_set(spark, name, ACCEPT_ANY_SCHEMA, "false"):
            _call(spark, f"MERGE INTO {name} t USING fink_spark_positions s ON {matched} WHEN MATCHED THEN UPDATE SET {updates}")
    return count


def maintain_table(spark: SparkSession, name: str, settings: Maintenance) -> dict[str, int]:
    """Compact, then expire and clean one table; returns what each step did."""
    procedures = name.split(".")[0] + ".system"
    target = settings.target_file_mb * 1024 * 1024
    settings_map = f"'target-file-size-bytes', '{target}', 'min-input-files', '2', 'partial-progress.enabled', 'true'"
    options = f"options => map({settings_map})"
    properties = properties_of(spark, name)
    window = _outside_merge_window(spark, properties.get(MERGE_WINDOW))
    sorted_on_sky = properties.get("sort-order", "").startswith(HEALPIX)
    rewritten: dict[str, int] = {}
    if sorted_on_sky:  # closed nights sorted on the sky, the current one only compacted
        (today,) = spark.sql("SELECT current_date()").first()  # the session is in UTC
        nights = nights_to_sort(_file_bounds(spark, name), today)
        closed = " OR ".join(f"({OBS_TIME} >= TIMESTAMP '{first} 00:00:00' AND {OBS_TIME} < TIMESTAMP '{end} 00:00:00')"
                             for first, end in nights)
        steps = [f"strategy => 'sort', options => map({settings_map}, 'rewrite-all', 'true'), "
                 f"where => \"({closed}){window}\""] if nights else []
        steps.append(f"{options}, where => \"{OBS_TIME} >= TIMESTAMP '{today} 00:00:00'{window}\"")
    else:
        steps = [options + (f", where => \"{window.removeprefix(' AND ')}\"" if window else "")]
    for step in steps:
        done = _call(spark, f"CALL {procedures}.rewrite_data_files(table => '{name}', {step})")[0].asDict()
        for key in ("rewritten_data_files_count", "added_data_files_count"):
            rewritten[key] = rewritten.get(key, 0) + done.get(key, 0)
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


FileBounds = tuple[str, int | None, int | None, datetime | None, datetime | None]


def _file_bounds(spark: SparkSession, name: str) -> list[FileBounds]:
    """Each live data file's partition, range of `_healpix_29` and range of observation times."""
    return [tuple(row) for row in spark.sql(
        f"SELECT to_json(partition), readable_metrics.{HEALPIX}.lower_bound, readable_metrics.{HEALPIX}.upper_bound, "
        f"readable_metrics.{OBS_TIME}.lower_bound, readable_metrics.{OBS_TIME}.upper_bound FROM {name}.files").collect()]


def nights_to_sort(files: list[FileBounds], today: date) -> list[tuple[date, date]]:
    """[first, end) spans of closed nights (UTC days before `today`) to rewrite sorted on the
    sky: those of each partition whose files' `_healpix_29` ranges overlap, or lack a bound."""
    by_partition: dict[str, list[FileBounds]] = {}
    for file in files:
        by_partition.setdefault(file[0], []).append(file)
    days: set[date] = set()
    for group in by_partition.values():
        if len(group) < 2:
            continue
        ranges = sorted((low, high) for _, low, high, _, _ in group if low is not None and high is not None)
        if len(ranges) == len(group) and all(low >= previous[1] for previous, (low, _) in zip(ranges, ranges[1:])):
            continue
        times = [time for _, _, _, first, last in group for time in (first, last) if time is not None]
        day, last = min(times).date(), max(times).date()
        while day <= last:
            days.add(day)
            day += timedelta(days=1)
    spans: list[tuple[date, date]] = []
    for day in sorted(day for day in days if day < today):
        if spans and spans[-1][1] == day:
            spans[-1] = (spans[-1][0], day + timedelta(days=1))
        else:
            spans.append((day, day + timedelta(days=1)))
    return spans


def _outside_merge_window(spark: SparkSession, window: str | None) -> str:
    """For a merged table (its merge `window`), the condition (` AND ...`) that leaves out the
    files its stream may still merge into (their rows' `ingest_time` within the window, and
    an hour more)."""
    if window is None:
        return ""
    (since,) = spark.sql(f"SELECT current_timestamp() - INTERVAL '{window}' - INTERVAL 1 HOUR").first()
    return f" AND ingest_time < TIMESTAMP '{since:%Y-%m-%d %H:%M:%S.%f}'"


def _timestamp(millis: int) -> str:
    return "TIMESTAMP '" + datetime.fromtimestamp(millis / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"


def maintain(spark: SparkSession, tables: Tables, settings: Maintenance, survey: Survey,
             alerts: tuple[str, ...] = (ALERTS,)) -> dict[str, dict[str, int]]:
    """Maintain each of a job's tables that exists (`alerts`: the tables of its kept alerts)."""
    tables.open(spark)
    done = {}
    for table in (*alerts, QUARANTINE, REJECTED):
        name = tables.name(table)
        if spark.catalog.tableExists(name):
            filled = {"positions added": fill_positions(spark, name, survey)} if table in alerts else {}
            done[name] = {**filled, **maintain_table(spark, name, settings)}
            log.info("%s: %s", name, ", ".join(f"{count} {what}" for what, count in done[name].items()))
    return done
