"""fink-spark explore: look at the alerts a job kept, in the terminal or as pictures.

    fink-spark explore show PATH [--table T] [--topic T] [--night 2026-03-22] [--where SQL] [--limit 20] [--format csv]
    fink-spark explore cutouts PATH --id CANDID --output cutouts.png
    fink-spark explore lightcurve PATH --object-id ZTF26aamcbly --output lc.png
    fink-spark explore card PATH --id CANDID --output card.png
    fink-spark explore summary PATH --output summary.png

The reading and the tables are `fink_spark.view.explore`'s, the pictures `fink_spark.view.plots`'.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from fink_spark.cli import SUMMARIES, run_cli
from fink_spark.cli.flags import TABLE_HELP
from fink_spark.errors import ConfigError
from fink_spark.table.warehouse import ALERTS
from fink_spark.view.explore import Output, Selection, newest_alert, object_history, parse_night, show, summarize, summary_rows

HELP = SUMMARIES["explore"]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> None:
    parser = argparse.ArgumentParser(description=HELP)
    add_arguments(parser)
    run(parser.parse_args(argv), out, parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", choices=["show", "cutouts", "lightcurve", "card", "summary"])
    parser.add_argument("path", help="the job's warehouse or Parquet output folder")
    parser.add_argument("--table", default=ALERTS, help=TABLE_HELP)
    parser.add_argument("--id", type=int, help="alert id (candid, diaSourceId)")
    parser.add_argument("--object-id", help="object id (objectId, diaObjectId)")
    parser.add_argument("--topic")
    parser.add_argument("--night", help="observation night, YYYY-MM-DD")
    parser.add_argument("--where", help="a Spark SQL condition over the alert columns (starts Spark)")
    parser.add_argument("--limit", type=int, default=20, help="rows shown (show)")
    parser.add_argument("--page", type=int, default=0, help="page of --limit rows, from 0 (show)")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--output", help="PNG file (pictures; summary also prints text)")


def run(args: argparse.Namespace, out: TextIO | None = None, parser: argparse.ArgumentParser | None = None) -> None:
    out = out or sys.stdout
    if args.command not in ("show", "summary") and not args.output:
        message = f"{args.command} needs --output FILE.png"
        if parser is not None:
            parser.error(message)
        raise ConfigError(message)
    output = Output(args.path, args.table)
    selection = Selection(args.id, args.object_id, args.topic, parse_night(args.night), args.where)
    if args.command == "show":
        shown = show(output, selection, args.limit, args.page, args.format, out)
        if args.format == "table":
            out.write(f"({shown} alerts shown, page {args.page})\n")
        return
    if args.command == "summary":
        summary = summarize(summary_rows(output, selection))
        out.write(summary.text() + "\n")
        if args.output:
            from fink_spark.view import plots  # matplotlib and astropy: an extra, for pictures

            out.write(f"written {plots.save_png(plots.summary_figure(summary), args.output)}\n")
        return
    from fink_spark.view import plots
    alert = newest_alert(output, selection)
    if args.command == "cutouts":
        figure = plots.cutouts(alert, output.survey)
    elif args.command == "lightcurve":
        figure = plots.lightcurve(object_history(output, alert), output.survey)
    else:
        figure = plots.card(alert, object_history(output, alert), output.survey)
    out.write(f"written {plots.save_png(figure, args.output)}\n")


if __name__ == "__main__":
    run_cli(main)
