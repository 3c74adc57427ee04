"""Entry points report expected failures as one clear paragraph, without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

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
