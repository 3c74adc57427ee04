"""The `fink-spark` command, and the way every entry point reports expected failures: one
clear paragraph, without a traceback.

argparse (the standard library's, as fink-client's own commands use): subcommands,
generated help, no dependency to add.
"""

from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> None:
    """fink-spark stream | reprocess | explore | discover ..."""
    from fink_spark import commands, discover, explore  # only the chosen command's imports matter

    parser = argparse.ArgumentParser(
        prog="fink-spark", description="Receive, filter, keep and reprocess Fink alert streams with Apache Spark.",
        epilog="Run 'fink-spark COMMAND --help' for a command's options.",
    )
    subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    for name, help_text, add_arguments, run in (
        ("stream", commands.STREAM_HELP, commands.add_stream_arguments, commands.stream),
        ("reprocess", commands.REPROCESS_HELP, commands.add_reprocess_arguments, commands.reprocess_command),
        ("explore", explore.HELP, explore.add_arguments, explore.run),
        ("discover", discover.HELP, discover.add_arguments, discover.run),
    ):
        subcommand = subcommands.add_parser(name, help=help_text, description=help_text)
        add_arguments(subcommand)
        subcommand.set_defaults(run=run)
    args = parser.parse_args(argv)
    run_cli(lambda: args.run(args))
