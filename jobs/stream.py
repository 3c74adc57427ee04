"""Stream Fink topics into checkpointed Parquet, a quarantine and the console.

    ./spark-submit.sh jobs/stream.py --config conf/fink_ztf.yaml [--available-now]

The same command as `fink-spark stream`, for spark-submit on a cluster.
"""

from __future__ import annotations

import argparse

from fink_spark.cli import run_cli
from fink_spark.cli.commands import STREAM_HELP, add_stream_arguments, stream

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=STREAM_HELP)
    add_stream_arguments(parser)
    run_cli(lambda: stream(parser.parse_args()))
