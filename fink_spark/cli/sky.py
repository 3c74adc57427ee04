"""fink-spark cone: the alerts within a radius of a position, from a job's output, without Spark.

    fink-spark cone --output WAREHOUSE --ra 150.1 --dec 2.2 --radius 30 [--since T] [--until T]
                    [--columns candidate.magpsf,...] [--to near.parquet|near.csv]

The search is `fink_spark.view.sky`'s.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

import pyarrow as pa

from fink_spark.cli import SUMMARIES
from fink_spark.config.job import parse_time
from fink_spark.display import format_table
from fink_spark.errors import ConfigError
from fink_spark.view.explore import Output, arrow_column
from fink_spark.view.sky import SEPARATION, Cone, cone_search

HELP = SUMMARIES["cone"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="PATH", help="the job's warehouse or Parquet folder")
    parser.add_argument("--ra", type=float, required=True, help="right ascension, degrees")
    parser.add_argument("--dec", type=float, required=True, help="declination, degrees")
    parser.add_argument("--radius", type=float, required=True, help="arcsec")
    parser.add_argument("--since", help="observed at or after this time (ISO 8601, UTC unless it says otherwise)")
    parser.add_argument("--until", help="observed before this time")
    parser.add_argument("--columns", help="more columns to show or write, comma-separated (dotted paths allowed)")
    parser.add_argument("--to", metavar="FILE", help="write the alerts to FILE.parquet (every column) or FILE.csv")


def _time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    moment = parse_time(text)
    if moment is None:
        raise ConfigError(f"{flag} must be a time such as 2026-03-22T04:00:00Z, not {text!r}.")
    return moment


def run(args: argparse.Namespace, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if args.to and not args.to.endswith((".parquet", ".csv")):
        raise ConfigError(f"--to {args.to}: give a file ending in .parquet or .csv.")
    cone = Cone(args.ra, args.dec, args.radius)
    output = Output(args.output)
    survey = output.survey
    extra = [name.strip() for name in (args.columns or "").split(",") if name.strip()]
    shown = [survey.id_column, survey.object_column, "ra", "dec", "obs_time", "topic", "topics", *extra]
    every_column = bool(args.to) and args.to.endswith(".parquet")
    alerts = cone_search(output, cone, _time(args.since, "--since"), _time(args.until, "--until"),
                         None if every_column else list(dict.fromkeys(name.split(".")[0] for name in shown)))
    shown.append(SEPARATION)
    if every_column:
        import pyarrow.parquet as pq

        pq.write_table(alerts, args.to)
    else:
        table = pa.table({name: column for name in shown if (column := arrow_column(alerts, name)) is not None})
        if args.to:
            import pyarrow.csv as csv

            try:
                csv.write_csv(table, args.to)
            except pa.ArrowInvalid as error:
                raise ConfigError(f"--to {args.to}: CSV holds plain values only ({error}); name leaf columns in "
                                  "--columns, or write .parquet.") from None
        else:
            out.write("\n".join(format_table(table.column_names, [list(row.values()) for row in table.to_pylist()])) + "\n")
    where = f"written to {Path(args.to)}" if args.to else "shown"
    out.write(f"({alerts.num_rows} alerts within {args.radius:g} arcsec of ra {args.ra:g}, dec {args.dec:g}, {where})\n")
