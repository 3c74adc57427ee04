"""Asking the sky of a job's output: `fink-spark cone` (without Spark) and `fink-spark xmatch`.

    fink-spark cone --output WAREHOUSE --ra 150.1 --dec 2.2 --radius 30 [--since T] [--until T]
                    [--columns candidate.magpsf,...] [--to near.parquet|near.csv]
    fink-spark xmatch --output WAREHOUSE --catalog targets.csv --radius 5 [--ra-column RA] [--dec-column DEC]
                      [--columns candid,candidate.magpsf] [--to pairs.parquet|pairs.csv]

The cone search is `fink_spark.view.sky`'s, the cross-match `fink_spark.view.xmatch`'s.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

import pyarrow as pa

from fink_spark.cli.commands import add_spark_options, session
from fink_spark.cli.flags import TABLE_HELP
from fink_spark.config.job import parse_time
from fink_spark.display import format_table
from fink_spark.errors import ConfigError
from fink_spark.table.warehouse import ALERTS
from fink_spark.transform.crossmatch import Targets, match_order
from fink_spark.view.explore import Output, arrow_column
from fink_spark.view.sky import SEPARATION, Cone, cone_search
from fink_spark.view.xmatch import alert_columns, xmatch_frame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="PATH", help="the job's warehouse or Parquet folder")
    parser.add_argument("--table", default=ALERTS, help=TABLE_HELP)
    parser.add_argument("--ra", type=float, required=True, help="right ascension, degrees")
    parser.add_argument("--dec", type=float, required=True, help="declination, degrees")
    parser.add_argument("--radius", type=float, required=True, help="arcsec")
    parser.add_argument("--since", help="observed at or after this time (ISO 8601, UTC unless it says otherwise)")
    parser.add_argument("--until", help="observed before this time")
    parser.add_argument("--columns", help="more columns to show or write, comma-separated (dotted paths allowed)")
    parser.add_argument("--to", metavar="FILE", help="write the alerts to FILE.parquet (every column) or FILE.csv")
    parser.add_argument("--spark", action="store_true", help="read with Spark, for large regions (default: pyiceberg or "
                                                             "pyarrow, without Spark)")
    add_spark_options(parser)


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
    output = Output(args.output, args.table)
    survey = output.survey
    extra = [name.strip() for name in (args.columns or "").split(",") if name.strip()]
    shown = [survey.id_column, survey.object_column, "ra", "dec", "obs_time", "topic", "topics", *extra]
    every_column = bool(args.to) and args.to.endswith(".parquet")
    since, until = _time(args.since, "--since"), _time(args.until, "--until")
    alerts = cone_search(output, cone, since, until,
                         None if every_column else list(dict.fromkeys(name.split(".")[0] for name in shown)),
                         session("fink-spark-cone", args) if args.spark else None)
    shown.append(SEPARATION)
    if every_column:
        write(alerts, args.to)
    else:
        table = pa.table({name: column for name in shown if (column := arrow_column(alerts, name)) is not None})
        if args.to:
            write(table, args.to)
        else:
            out.write("\n".join(format_table(table.column_names, [list(row.values()) for row in table.to_pylist()])) + "\n")
    where = f"written to {Path(args.to)}" if args.to else "shown"
    out.write(f"({alerts.num_rows} alerts within {args.radius:g} arcsec of ra {args.ra:g}, dec {args.dec:g}, {where})\n")


def add_xmatch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="PATH", help="the job's warehouse or Parquet folder")
    parser.add_argument("--table", default=ALERTS, help=TABLE_HELP)
    parser.add_argument("--catalog", required=True, metavar="FILE", help="the targets: .csv (with a header line) or .parquet")
    parser.add_argument("--radius", type=float, required=True, help="arcsec")
    parser.add_argument("--ra-column", default="ra", help="the catalog's right ascension column, degrees")
    parser.add_argument("--dec-column", default="dec", help="the catalog's declination column, degrees")
    parser.add_argument("--columns", help="the alert's columns to give, comma-separated (dotted paths allowed); "
                                          "default: its ids, obs_time and topic")
    parser.add_argument("--to", metavar="FILE", help="write the pairs to FILE.parquet or FILE.csv")
    add_spark_options(parser)


SHOWN_PAIRS = 50


def run_xmatch(args: argparse.Namespace, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if args.to and not args.to.endswith((".parquet", ".csv")):
        raise ConfigError(f"--to {args.to}: give a file ending in .parquet or .csv.")
    targets = Targets(args.catalog, args.ra_column, args.dec_column)
    match_order(args.radius)  # a clear error before Spark starts
    from fink_spark.table.read import read_table

    spark = session("fink-spark-xmatch", args)
    alerts = read_table(spark, args.output, args.table)
    columns = [name.strip() for name in args.columns.split(",") if name.strip()] if args.columns else alert_columns(alerts)
    pairs = xmatch_frame(alerts, targets, args.radius, columns).toArrow()
    if args.to:
        write(pairs, args.to)
    else:
        shown = pairs.slice(0, SHOWN_PAIRS)
        out.write("\n".join(format_table(shown.column_names, [list(row.values()) for row in shown.to_pylist()])) + "\n")
    where = f"written to {Path(args.to)}" if args.to else (
        "shown" if pairs.num_rows <= SHOWN_PAIRS else f"the first {SHOWN_PAIRS} shown; --to FILE writes them all")
    out.write(f"({pairs.num_rows} pairs of {len(targets):,} targets and alerts within {args.radius:g} arcsec, {where})\n")


def write(table: pa.Table, path: str) -> None:
    """A result to .parquet (every column) or .csv (plain values only)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        pq.write_table(table, path)
        return
    import pyarrow.csv as csv

    try:
        csv.write_csv(table, path)
    except pa.ArrowInvalid as error:
        raise ConfigError(f"--to {path}: CSV holds plain values only ({error}); name leaf columns in "
                          "--columns, or write .parquet.") from None
