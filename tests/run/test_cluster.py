"""The streaming job on a real Spark standalone cluster: one master and two workers,
separate processes on loopback, submitted with ./spark-submit.sh --master spark://..."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, sample

from fink_spark.paths import PROJECT_ROOT
from fink_spark.surveys import ZTF
from fink_spark.testing.local_cluster import LocalSparkCluster
from fink_spark.testing.publisher import publish


@pytest.fixture(scope="module")
def cluster():  # noqa: ANN201
    with LocalSparkCluster(workers=2, cores=1, memory="1g") as running:
        yield running


def submit(cluster: LocalSparkCluster, config: Path) -> subprocess.Popen[str]:
    command = [str(PROJECT_ROOT / "spark-submit.sh"), "--master", cluster.url,
               "--total-executor-cores", "2", "--executor-cores", "1", "--executor-memory", "768m",
               "--conf", "spark.task.maxFailures=8",
               "jobs/stream.py", "--config", str(config), "--available-now"]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "FINK_TEST_PASSWORD": PASSWORD}, start_new_session=True)


def write_config(broker, tmp_path: Path, topic: str) -> Path:  # noqa: ANN001
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps({
        "survey": "ztf",
        "kafka": {"servers": broker.bootstrap, "username": USER, "password_env": "FINK_TEST_PASSWORD",
                  "group_id": "fink_user_spark", "topics": [topic], "max_offsets_per_trigger": 25},
        "output": {"format": "parquet", "table": {"path": str(tmp_path / "out"), "checkpoint": str(tmp_path / "chk")},
                   "console": {"enabled": False}},
    }))
    return config


def committed_batches(folder: Path) -> int:
    log = folder / "_spark_metadata"
    return len([p for p in log.iterdir() if p.name.split(".")[0].isdigit()]) if log.exists() else 0


@pytest.mark.subprocess
def test_job_survives_losing_a_worker_with_every_alert_once(spark, broker, new_topic, cluster, tmp_path: Path) -> None:  # noqa: ANN001
    topic = new_topic("fink_cluster_ztf", partitions=2)
    sent = publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=75)  # 300 alerts
    job = submit(cluster, write_config(broker, tmp_path, topic))
    deadline = time.monotonic() + 300
    while committed_batches(tmp_path / "out") < 2 and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert job.poll() is None, "the job ended before a worker could be killed"
    cluster.kill_worker(0)  # kill -9 one worker and its executor, mid-stream
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output[-4000:]
    rows = spark.read.parquet(str(tmp_path / "out")).select("candid", "kafka_partition", "kafka_offset").collect()
    assert len(rows) == sent == len({(row.kafka_partition, row.kafka_offset) for row in rows})
    assert len({row.candid for row in rows}) == sent
    assert committed_batches(tmp_path / "out") > 2
