"""The README's first command: the bundled real alerts through a local broker and the job.

Starts a local Kafka broker, publishes the sample alerts as Fink does, runs
`./spark-submit.sh jobs/stream.py` in local mode until it has consumed them, and says
what it left on disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections import Counter

from fink_spark.config.job import JobConfig, load_config
from fink_spark.paths import PROJECT_ROOT, SAMPLE_DIR
from fink_spark.surveys import ZTF
from fink_spark.table.warehouse import load_pyiceberg
from fink_spark.testing.local_broker import LocalKafka
from fink_spark.testing.publisher import publish

CONFIG = PROJECT_ROOT / "conf" / "demo_ztf.yaml"
USER, PASSWORD = "fink_user", "demo-password-not-secret"
# (topic, sample folder): the 2026 alerts in two Fink topics, so that alerts passing
# several filters arrive once per topic, and the 2019 alerts in schema 0p2.
STREAMS = [
    ("fink_sn_candidates_ztf", "ztf-2026"),
    ("fink_early_sn_candidates_ztf", "ztf-2026"),
    ("fink_ztf_0p2_replay", "ztf-0p2"),
]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s")
    config = load_config_with_password()
    shutil.rmtree(PROJECT_ROOT / "output" / "demo", ignore_errors=True)
    with LocalKafka(users={USER: PASSWORD}) as broker:
        print(f"[demo] Kafka broker on {broker.bootstrap} (SASL/SCRAM-SHA-512, user {USER})", flush=True)
        broker.create_topics([topic for topic, _ in STREAMS])
        for topic, folder in STREAMS:
            count = publish(broker.client_config(USER), topic, [SAMPLE_DIR / folder], ZTF)
            print(f"[demo] published {count} real alerts from data/sample/{folder} to {topic}", flush=True)
        command = [
            str(PROJECT_ROOT / "spark-submit.sh"), "--master", "local[2]",
            "jobs/stream.py", "--config", str(CONFIG), "--servers", broker.bootstrap,
        ]
        print(f"[demo] running: {' '.join(command)}", flush=True)
        env = {**os.environ, "FINK_SPARK_DEMO_PASSWORD": PASSWORD}
        result = subprocess.run(command, cwd=PROJECT_ROOT, env=env)
        if result.returncode != 0:
            sys.exit(result.returncode)
    summarize(config.output.path)


def load_config_with_password() -> JobConfig:
    """The demo's configuration (its password variable is set for the job it runs)."""
    os.environ.setdefault("FINK_SPARK_DEMO_PASSWORD", PASSWORD)
    return load_config(CONFIG)


def summarize(path: str) -> None:
    """Count the kept alerts per topic, as any Iceberg reader sees them (pyiceberg here)."""
    table = load_pyiceberg(path)
    per_topic = Counter(table.scan(selected_fields=("topic",)).to_arrow()["topic"].to_pylist())
    files = len(list(table.scan().plan_files()))
    print(f"[demo] Iceberg table ztf.alerts in {path} (catalog {path}/catalog.db): "
          f"{sum(per_topic.values())} alerts in {files} Parquet files")
    for topic, count in sorted(per_topic.items()):
        print(f"[demo]   {topic}: {count} alerts")


if __name__ == "__main__":
    main()
