"""A catalog shared as on a cluster: Iceberg's JDBC catalog on a real PostgreSQL server.

A SQLite file serves one host; on a cluster every driver and every reader must commit to and
read from one catalog. Two jobs on different topics run side by side with spark-submit, each
writing its own namespace of the catalog `lake` (docs/deploying.md, "The table on a cluster"),
and pyiceberg reads both tables from the same server.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PASSWORD, USER, sample
from reference import check_alerts, read_alerts, ztf_mjd

from fink_spark.paths import PROJECT_ROOT
from fink_spark.surveys import ZTF
from fink_spark.testing.local_postgres import LocalPostgres
from fink_spark.testing.publisher import publish


@pytest.fixture(scope="module")
def postgres():  # noqa: ANN201
    with LocalPostgres() as server:
        yield server


@pytest.mark.subprocess
def test_two_jobs_write_one_postgresql_catalog_that_pyiceberg_reads(broker, new_topic, postgres, tmp_path: Path) -> None:  # noqa: ANN001
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse = tmp_path / "lake"
    jobs = {}
    for namespace, folder in (("sn", "ztf-2026"), ("kn", "ztf-0p2")):
        topic = new_topic(f"fink_{namespace}_candidates_ztf")
        sent = publish(broker.client_config(USER), topic, [sample(folder)], ZTF)
        config = tmp_path / f"{namespace}.yaml"
        config.write_text(yaml.safe_dump({
            "survey": "ztf",
            "kafka": {"servers": broker.bootstrap, "username": USER, "password_env": "FINK_TEST_PASSWORD",
                      "group_id": "fink_user_spark", "topics": [topic]},
            "output": {"table": {"catalog": "lake", "namespace": namespace, "checkpoint": str(tmp_path / f"chk_{namespace}")},
                       "console": {"enabled": False}},
        }))
        command = [str(PROJECT_ROOT / "spark-submit.sh"), "--master", "local[1]", *postgres.spark_catalog_options("lake", warehouse),
                   "jobs/stream.py", "--config", str(config), "--available-now"]
        jobs[namespace] = (topic, folder, sent, subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "FINK_TEST_PASSWORD": PASSWORD}))
    for namespace, (_, _, _, job) in jobs.items():  # side by side: both commit to the one catalog
        output, _ = job.communicate(timeout=400)
        assert job.returncode == 0, f"{namespace}: {output[-4000:]}"
        assert PASSWORD not in output and postgres.password not in output

    catalog = SqlCatalog("lake", uri=postgres.sqlalchemy_url, warehouse=warehouse.as_uri())
    assert sorted(catalog.list_namespaces()) == [("kn",), ("sn",)]
    for namespace, (topic, folder, sent, _) in jobs.items():
        assert {name for _, name in catalog.list_tables(namespace)} == {"alerts", "quarantine"}
        rows = catalog.load_table(f"{namespace}.alerts").scan().to_arrow().to_pylist(maps_as_pydicts="strict")
        assert len(rows) == sent
        check_alerts(rows, read_alerts(sample(folder)), "candid", topic, ztf_mjd)  # every field, as fastavro reads it
        assert catalog.load_table(f"{namespace}.quarantine").scan().to_arrow().num_rows == 0
    assert list(warehouse.glob("*/alerts/data/topic=*/obs_time_day=*/*.parquet"))  # the data: under the shared warehouse
