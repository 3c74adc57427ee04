"""Does the stream job's rate grow with cores, and is a cluster as fast as local mode?

    .venv/bin/python bench/scaling.py [--ztf 20000] [--lsst 4000] [--repeat 2] [--output bench/SCALING.md]

It publishes replicated real alerts to topics of 2 partitions of one local broker, then runs
the job as shipped (`conf/fink_<survey>.yaml`, console on, `--available-now`) on each topic,
the variants in turn, round after round (the order reversed every other round):
- `local[1]`, `local[2]`: local mode with one and two task threads, the SQLite catalog;
- `local[2], PostgreSQL`: the same, on a shared catalog (Iceberg's JDBC catalog on a local
  PostgreSQL server), which isolates what the shared catalog costs;
- `cluster 2x1`: a standalone cluster of 2 workers of 1 core each (separate JVMs on
  loopback, fink_spark.testing.local_cluster), the driver in client mode, on the same
  PostgreSQL catalog, as a real cluster runs it.
End to end is process start to exit; processing is the sum of the micro-batches.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import (  # noqa: E402
    PARTITIONS,
    PASSWORD,
    USER,
    WORK,
    Result,
    median_run,
    publish_workload,
    run_measured,
    shipped_config,
)

from fink_spark.paths import CONF_DIR, driver_java_options  # noqa: E402
from fink_spark.surveys import LSST, ZTF, Survey  # noqa: E402
from fink_spark.testing.local_broker import LocalKafka  # noqa: E402
from fink_spark.testing.local_cluster import LocalSparkCluster  # noqa: E402
from fink_spark.testing.local_postgres import LocalPostgres  # noqa: E402

WORK_SCALING = WORK / "scaling"
VARIANTS = ["local[1]", "local[2]", "local[2], PostgreSQL", "cluster 2x1", "cluster 2x1, executor archive"]
SHIPPED_VARIANTS = VARIANTS[:4]


def run(variant: str, broker: LocalKafka, topic: str, survey: Survey, size: float, index: int,
        postgres: LocalPostgres, cluster: LocalSparkCluster) -> Result:
    out = WORK_SCALING / f"{topic}_{VARIANTS.index(variant)}_{index}"
    out.mkdir(parents=True)
    config = shipped_config(survey, broker, topic, out)
    options = ["--master", variant.split(",")[0]]
    if "PostgreSQL" in variant or variant.startswith("cluster"):
        data = yaml.safe_load(config.read_text())
        namespace = f"run{VARIANTS.index(variant)}_{index}_{survey.name}"
        data["output"]["table"] = {**data["output"]["table"], "catalog": "lake", "namespace": namespace}
        data["output"]["table"].pop("path")
        config.write_text(yaml.safe_dump(data))
        options += postgres.spark_catalog_options("lake", out / "lake")
    if variant.startswith("cluster"):
        options = ["--master", cluster.url, "--total-executor-cores", "2", "--executor-cores", "1",
                   "--executor-memory", "1g", *options[2:]]
    if variant.endswith("executor archive"):  # the driver's class-data archive for the executors too
        options += ["--conf", f"spark.executor.extraJavaOptions={driver_java_options(CONF_DIR / 'log4j2.properties')} -Xshare:auto"]
    seconds, peak, output = run_measured([str(ROOT / "spark-submit.sh"), *options,
                                          "jobs/stream.py", "--config", str(config), "--available-now"])
    (out / "job.log").write_text(output)
    done = _done(output)
    return Result(variant, topic, done[0], seconds, done[1], size, peak, 0.0)


def _done(output: str) -> tuple[int, float]:
    """(alerts, seconds of micro-batches) from the job's last line of totals."""
    found = re.search(r"alerts done: (\d+) records in ([\d.]+) s of micro-batches", output)
    if not found:
        raise RuntimeError(f"the job printed no totals:\n{output[-3000:]}")
    return int(found.group(1)), float(found.group(2))


def report(results: list[Result], args: argparse.Namespace) -> str:
    lines = ["# Scaling: cores and a cluster", "",
             f"`bench/scaling.py` on this machine (2 cores), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
             f"the job as shipped on topics of {PARTITIONS} partitions, medians of {args.repeat} runs "
             "(the variants in turn). A cluster's 2 executors and its driver share the same 2 cores.", "",
             "| workload | variant | alerts | end to end (s) | end to end (alerts/s) | processing (alerts/s) "
             "| against local[2], end to end | peak memory of the driver, PSS (MB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for workload in dict.fromkeys(r.workload for r in results):
        rows = [r for r in results if r.workload == workload]
        base = next((r for r in rows if r.contender == "local[2]"), rows[0])
        for r in rows:
            lines.append(f"| {workload} | {r.contender} | {r.alerts} | {r.seconds:.1f} | {r.rate:.0f} | "
                         f"{r.rate_no_startup or 0:.0f} | {r.rate / base.rate:.2f} | {r.peak_memory_mb:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ztf", type=int, default=20000)
    parser.add_argument("--lsst", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="variants to run (default: all but the last)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "SCALING.md"))
    args = parser.parse_args()
    shutil.rmtree(WORK_SCALING, ignore_errors=True)
    WORK_SCALING.mkdir(parents=True)
    results: list[Result] = []
    with (LocalKafka(users={USER: PASSWORD}, heap="2g", workdir=WORK_SCALING / "kafka") as broker,
          LocalPostgres() as postgres,
          LocalSparkCluster(workers=2, cores=1, memory="1536m", workdir=WORK_SCALING / "cluster") as cluster):
        workloads = []
        for survey, folder, count in ((ZTF, "ztf-2026", args.ztf), (LSST, "lsst-2026", args.lsst)):
            if not count:
                continue
            topic = f"scaling_{survey.name}_{count}"
            size = publish_workload(broker, topic, survey, folder, count, PARTITIONS)
            print(f"published {count} alerts ({size:.0f} MB) to {topic}", flush=True)
            workloads.append((survey, topic, size))
        for survey, topic, size in workloads:
            variants = args.variant or SHIPPED_VARIANTS
            runs: dict[str, list[Result]] = {variant: [] for variant in variants}
            for index in range(args.repeat):
                for variant in variants if index % 2 == 0 else variants[::-1]:
                    result = run(variant, broker, topic, survey, size, index, postgres, cluster)
                    runs[variant].append(result)
                    print(f"{topic}: {variant}: {result.alerts} alerts, {result.seconds:.1f} s end to end, "
                          f"{result.rate_no_startup or 0:.0f} alerts/s processing", flush=True)
            results += [median_run(variant_runs) for variant_runs in runs.values()]
    Path(args.output).write_text(report(results, args))
    print(Path(args.output).read_text())
    print(f"results in {args.output}")


if __name__ == "__main__":
    main()
