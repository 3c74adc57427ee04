"""fink-client as its users run it: AlertConsumer.poll_and_write, one Avro file per alert (as `--save`).

    python bench/fink_client_consumer.py SERVERS TOPIC COUNT OUTDIR USER PASSWORD_ENV SURVEY
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fink_client.consumer import AlertConsumer


def main() -> None:
    servers, topic, count, outdir, user, password_env, survey = sys.argv[1:8]
    Path(outdir).mkdir(parents=True, exist_ok=True)
    config = {"username": user, "password": os.environ[password_env], "group.id": f"fink-client-{os.getpid()}",
              "bootstrap.servers": servers}
    done = 0
    with AlertConsumer([topic], config, survey=survey) as consumer:
        while done < int(count):
            received, _alert, _key = consumer.poll_and_write(outdir, timeout=10, overwrite=True)
            if received is not None:
                done += 1
    print(f"fink-client: {done} alerts")


if __name__ == "__main__":
    main()
