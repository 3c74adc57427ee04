"""The `fink-spark` command, and the way every entry point reports expected failures: one
clear paragraph, without a traceback.

argparse (the standard library's, as fink-client's own commands use): subcommands,
generated help, no dependency to add. Only the chosen command's module is imported:

- `commands`: stream, reprocess, topics, status, config (and `jobs/*.py` for spark-submit);
- `flags`: the flags shared by the commands, laid over a YAML file's mapping key by key;
- `discover`, `maintain`, `explore`, `audit`: one command each; `sky`: cone and xmatch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from fink_spark.errors import ConfigError, KafkaAccessError

USER_ERRORS = (ConfigError, KafkaAccessError, FileNotFoundError)


def run_cli(main: Callable[[], None]) -> None:
    """Run an entry point; a user error prints 'fink-spark: <message>' and exits with 2."""
    try:
        main()
    except USER_ERRORS as error:
        print(f"fink-spark: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("fink-spark: interrupted; the checkpoint keeps what was done", file=sys.stderr)
        sys.exit(130)


# name -> (module, its add-arguments function, its run function)
COMMANDS = {
    "stream": ("fink_spark.cli.commands", "add_stream_arguments", "stream"),
    "reprocess": ("fink_spark.cli.commands", "add_reprocess_arguments", "reprocess_command"),
    "explore": ("fink_spark.cli.explore", "add_arguments", "run"),
    "discover": ("fink_spark.cli.discover", "add_arguments", "run"),
    "maintain": ("fink_spark.cli.maintain", "add_arguments", "run"),
    "audit": ("fink_spark.cli.audit", "add_arguments", "run"),
    "cone": ("fink_spark.cli.sky", "add_arguments", "run"),
    "xmatch": ("fink_spark.cli.sky", "add_xmatch_arguments", "run_xmatch"),
    "topics": ("fink_spark.cli.commands", "add_topics_arguments", "print_topics"),
    "status": ("fink_spark.cli.commands", "add_status_arguments", "print_status"),
    "config": ("fink_spark.cli.commands", "add_config_arguments", "print_config"),
}
SUMMARIES = {
    "stream": "Stream Fink topics into a checkpointed Iceberg table (or Parquet), a quarantine and the console.",
    "reprocess": "Reprocess saved alerts (Avro, gzipped Avro, Parquet, Iceberg, Kafka offset ranges) into the table.",
    "explore": "Look at the alerts a job kept: tables, cutouts, light curves, summaries (no Spark needed).",
    "discover": "Save the writer schema of a Fink topic, and say what it holds.",
    "maintain": "Compact a job's Iceberg tables and expire old snapshots, safely while the stream runs.",
    "audit": "Account for every offset the job read: kept, quarantined, rejected or lost to retention; report gaps.",
    "cone": "The alerts within a radius of a position, nearest first, from the table's HEALPix index (no Spark).",
    "xmatch": "Every (target, alert) pair within a radius, for a catalog of up to millions of targets (Spark).",
    "topics": "List the topics your credentials may read, with partitions and end offsets.",
    "status": "Say, without starting a job, where its checkpoint is on each partition and how far behind.",
    "config": "Print the configuration a job would run with (file and flags), the password hidden.",
}


def parser_for(arguments: Sequence[str]) -> argparse.ArgumentParser:
    """The `fink-spark` parser, with the arguments of the command `arguments` name (only that
    command's module is imported: `explore` answers without loading Spark)."""
    parser = argparse.ArgumentParser(
        prog="fink-spark", description="Receive, filter, keep and reprocess Fink alert streams with Apache Spark.",
        epilog="Run 'fink-spark COMMAND --help' for a command's options.",
    )
    subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    chosen = next((word for word in arguments if not word.startswith("-")), None)
    for name, summary in SUMMARIES.items():
        subcommand = subcommands.add_parser(name, help=summary, description=summary,
                                             formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            module_name, add_arguments, run = COMMANDS[name]
            module = importlib.import_module(module_name)
            getattr(module, add_arguments)(subcommand)
            subcommand.set_defaults(run=getattr(module, run))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """fink-spark stream | reprocess | explore | discover ..."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser_for(arguments).parse_args(arguments)
    run_cli(lambda: args.run(args))
