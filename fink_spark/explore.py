"""Look at the alerts a job kept: tables in the terminal, cutouts, light curves, cards, summaries.

    python -m fink_spark.explore show PATH [--topic T] [--night 2026-03-22] [--where SQL] [--limit 20] [--format csv]
    python -m fink_spark.explore cutouts PATH --id CANDID --output cutouts.png
    python -m fink_spark.explore lightcurve PATH --object-id ZTF26aamcbly --output lc.png
    python -m fink_spark.explore card PATH --id CANDID --output card.png
    python -m fink_spark.explore summary PATH --output summary.png

PATH is a job's Parquet output, read with Spark so that only committed files count.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from datetime import date
from typing import Any, TextIO

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fink_spark.cli import run_cli
from fink_spark.display import console_columns, format_table, has_column
from fink_spark.errors import ConfigError
from fink_spark.plots import card, cutouts, lightcurve, save_png, summarize, summary_figure
from fink_spark.session import build_session, local_conf
from fink_spark.surveys import LSST, ZTF, Survey
from fink_spark.table_schema import read_table


def survey_of(alerts: DataFrame) -> Survey:
    """The survey of an output, from its id column."""
    return LSST if "diaSourceId" in alerts.columns else ZTF


def select_alerts(
    alerts: DataFrame, survey: Survey, alert_id: int | None = None, object_id: str | None = None,
    topic: str | None = None, night: str | None = None, where: str | None = None,
) -> DataFrame:
    """The alerts matching every selection given."""
    if alert_id is not None:
        alerts = alerts.where(F.col(survey.id_column) == alert_id)
    if object_id is not None:
        alerts = alerts.where(F.col(survey.object_column).cast("string") == object_id)
    if topic is not None:
        column = "topic" if "topic" in alerts.columns else None
        alerts = alerts.where(F.col(column) == topic) if column else alerts.where(F.array_contains("topics", topic))
    if night is not None:
        try:
            day = date.fromisoformat(night)
        except ValueError:
            raise ConfigError(f"--night must be a date such as 2026-03-22, not {night!r}.") from None
        alerts = alerts.where((F.col("year") == day.year) & (F.col("month") == day.month) & (F.col("day") == day.day))
    if where:
        alerts = alerts.where(F.expr(where))
    return alerts


def show(alerts: DataFrame, survey: Survey, limit: int, page: int, output_format: str, out: TextIO) -> int:
    """Write the console columns of one page of alerts as a table, CSV or JSON; returns the row count."""
    table = alerts.transform(console_columns(survey))
    labels = table.columns
    rows = table.offset(page * limit).limit(limit).collect()
    if output_format == "csv":
        writer = csv.writer(out)
        writer.writerow(labels)
        writer.writerows([list(row) for row in rows])
    elif output_format == "json":
        out.write(json.dumps([row.asDict() for row in rows], indent=1) + "\n")
    else:
        out.write("\n".join(format_table(labels, rows)) + "\n")
    return len(rows)


def _one(alerts: DataFrame, survey: Survey) -> dict[str, Any]:
    newest = alerts.orderBy(F.expr(survey.mjd_expression).desc()).limit(1).collect()
    if not newest:
        raise ConfigError("No alert matches the selection.")
    return newest[0].asDict(recursive=True)


def _object_history(everything: DataFrame, alert: dict[str, Any], survey: Survey) -> list[dict[str, Any]]:
    object_id = alert["objectId"] if survey.name == "ztf" else alert["diaSource"]["diaObjectId"]
    rows = everything.where(F.col(survey.object_column) == object_id).collect()
    return [row.asDict(recursive=True) for row in rows]


def summary_rows(alerts: DataFrame, survey: Survey) -> list[dict[str, Any]]:
    fink_class = F.col(survey.class_column) if has_column(alerts.schema, survey.class_column) else F.lit(None)
    topic = F.col("topic") if "topic" in alerts.columns else F.array_join("topics", ",")
    rows = alerts.select(
        topic.alias("topic"), "year", "month", "day",
        fink_class.cast("string").alias("fink_class"),
        F.expr(survey.magnitude_expression).cast("double").alias("magnitude"),
    ).collect()
    return [row.asDict() for row in rows]


HELP = "Look at the alerts a fink-spark job kept: tables, cutouts, light curves, summaries."


def main(argv: Sequence[str] | None = None, spark: SparkSession | None = None, out: TextIO | None = None) -> None:
    parser = argparse.ArgumentParser(description=HELP)
    add_arguments(parser)
    run(parser.parse_args(argv), spark, out, parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", choices=["show", "cutouts", "lightcurve", "card", "summary"])
    parser.add_argument("path", help="the job's Parquet output folder")
    parser.add_argument("--id", type=int, help="alert id (candid, diaSourceId)")
    parser.add_argument("--object-id", help="object id (objectId, diaObjectId)")
    parser.add_argument("--topic")
    parser.add_argument("--night", help="observation night, YYYY-MM-DD")
    parser.add_argument("--where", help="a Spark SQL condition over the alert columns")
    parser.add_argument("--limit", type=int, default=20, help="rows shown (show)")
    parser.add_argument("--page", type=int, default=0, help="page of --limit rows, from 0 (show)")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--output", help="PNG file (pictures; summary also prints text)")


def run(args: argparse.Namespace, spark: SparkSession | None = None, out: TextIO | None = None,
        parser: argparse.ArgumentParser | None = None) -> None:
    out = out or sys.stdout
    if args.command != "show" and args.command != "summary" and not args.output:
        message = f"{args.command} needs --output FILE.png"
        if parser is not None:
            parser.error(message)
        raise ConfigError(message)
    spark = spark or build_session("fink-spark-explore", "local[2]", local_conf())
    try:
        everything = read_table(spark, args.path)
    except Exception as error:  # noqa: BLE001 - Spark's message is long; the cause is simple
        raise FileNotFoundError(f"{args.path} holds no fink-spark Parquet output ({type(error).__name__}).") from None
    survey = survey_of(everything)
    chosen = select_alerts(everything, survey, args.id, args.object_id, args.topic, args.night, args.where)
    if args.command == "show":
        shown = show(chosen, survey, args.limit, args.page, args.format, out)
        if args.format == "table":
            out.write(f"({shown} alerts shown, page {args.page})\n")
        return
    if args.command == "summary":
        summary = summarize(summary_rows(chosen, survey), survey)
        out.write(summary.text() + "\n")
        if args.output:
            out.write(f"written {save_png(summary_figure(summary), args.output)}\n")
        return
    alert = _one(chosen, survey)
    if args.command == "cutouts":
        figure = cutouts(alert, survey)
    elif args.command == "lightcurve":
        figure = lightcurve(_object_history(everything, alert, survey), survey)
    else:
        figure = card(alert, _object_history(everything, alert, survey), survey)
    out.write(f"written {save_png(figure, args.output)}\n")


if __name__ == "__main__":
    run_cli(main)
