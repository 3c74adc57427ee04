"""`fink-spark maintain`: keep a season of micro-batches compact, beside the running stream
(the procedures are `fink_spark.table.maintain`'s)."""

from __future__ import annotations

import argparse

from fink_spark.cli.commands import add_spark_options, log_progress, session
from fink_spark.cli.flags import config_from_flags
from fink_spark.config.job import ICEBERG
from fink_spark.errors import ConfigError
from fink_spark.surveys import SURVEYS
from fink_spark.table.catalog import Tables, alert_tables
from fink_spark.table.maintain import MIN_ORPHAN_AGE_HOURS, Maintenance, maintain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Maintenance()
    parser.add_argument("--config", help="the job's YAML configuration (its output.table)")
    parser.add_argument("--output", metavar="PATH", help="the job's warehouse, instead of a configuration's")
    parser.add_argument("--survey", choices=sorted(SURVEYS), help="the tables' survey, with --output")
    parser.add_argument("--target-file-mb", type=int, default=defaults.target_file_mb, help="size of compacted files")
    parser.add_argument("--snapshot-age-hours", type=float, default=defaults.snapshot_age_hours,
                        help="expire snapshots older than this (time travel goes back this far)")
    parser.add_argument("--retain-snapshots", type=int, default=defaults.retain_snapshots,
                        help="keep at least this many snapshots")
    parser.add_argument("--orphan-age-hours", type=float, default=defaults.orphan_age_hours,
                        help=f"remove unreferenced files older than this (at least {MIN_ORPHAN_AGE_HOURS})")
    add_spark_options(parser)


def run(args: argparse.Namespace) -> None:
    log_progress()
    config = config_from_flags(args, outputs_only=True)
    if config.output.format != ICEBERG:
        raise ConfigError("fink-spark maintain keeps Iceberg tables compact; this job writes plain Parquet "
                          "(output.format: parquet), which has no maintenance.")
    if args.orphan_age_hours < MIN_ORPHAN_AGE_HOURS:
        raise ConfigError(f"--orphan-age-hours {args.orphan_age_hours:g} is too short: a file the stream is writing "
                          f"now is not referenced yet, and Iceberg refuses less than {MIN_ORPHAN_AGE_HOURS} hours. "
                          f"Give {MIN_ORPHAN_AGE_HOURS} or more.")
    settings = Maintenance(args.target_file_mb, args.snapshot_age_hours, args.retain_snapshots, args.orphan_age_hours)
    spark = session("fink-spark-maintain", args)
    try:
        done = maintain(spark, Tables.of(config.output, config.survey.name), settings, config.survey,
                        alert_tables(config.filters))
    finally:
        spark.stop()
    for name, counts in done.items():
        print(f"{name}: " + ", ".join(f"{count} {what}" for what, count in counts.items()))
