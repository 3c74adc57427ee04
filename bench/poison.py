"""A topic with 1% poison against a clean one: what quarantining costs the job.

    .venv/bin/python bench/poison.py --ztf 50000 --lsst 10000 --every 100

Publishes, for each survey, two topics of the same real alerts (replicated with new ids,
2 partitions): one clean, one where every `every`th message is poison (an alert's value cut
in half, which does not decode). The job drains each as shipped (the Iceberg table, console
on, `--available-now`), `--repeat` pairs of runs, the clean topic first in every other pair
and the poisoned one first in the others (so that neither gains from its place). Reports records/s
over the micro-batches and end to end, the alerts kept and the records quarantined (read
back from the tables), and the ratio poisoned / clean. Writes bench/POISON.md.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PARTITIONS, PASSWORD, ROOT, USER, WORK, Result, fink_spark, publish_workload  # noqa: E402

from fink_spark.surveys import LSST, ZTF, Survey  # noqa: E402
from fink_spark.table.warehouse import load_pyiceberg  # noqa: E402
from fink_spark.testing.local_broker import LocalKafka  # noqa: E402


def batches(topic: str) -> list[tuple[int, float]]:
    """Each micro-batch's records and seconds, from the job's log of its last run."""
    log = (WORK / "out" / f"spark_{topic}_default.log").read_text()
    return [(int(count), float(seconds)) for count, seconds in re.findall(r"alerts: batch \d+, (\d+) records in ([\d.]+) s", log)]


def after_first(runs: list[list[tuple[int, float]]]) -> float:
    """Records/s of the micro-batches after the first (cold: JIT, first writes), median of the runs."""
    return statistics.median(sum(n for n, _ in run[1:]) / sum(s for _, s in run[1:]) for run in runs if len(run) > 1)


def cpu_seconds() -> float:
    """CPU time of this process's finished children (the job's processes, JVM included):
    the work a run took, less sensitive than its wall time to what else runs on the machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def table_rows(topic: str, table: str) -> int:
    """Rows of one of the run's tables (pyiceberg: no fink-spark reader)."""
    return len(load_pyiceberg(WORK / "out" / f"spark_{topic}_default_iceberg" / "alerts", table).scan().to_arrow())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ztf", type=int, default=50000, help="ZTF alerts per topic (0: none)")
    parser.add_argument("--lsst", type=int, default=10000, help="LSST alerts per topic (0: none)")
    parser.add_argument("--every", type=int, default=100, help="one message in this many is poison")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each topic, alternating")
    parser.add_argument("--output", default=str(ROOT / "bench" / "POISON.md"))
    args = parser.parse_args()
    plan: list[tuple[Survey, str, int]] = [(ZTF, "ztf-2026", args.ztf), (LSST, "lsst-2026", args.lsst)]
    timings: dict[str, list[list[tuple[int, float]]]] = {}
    cpu: dict[str, list[float]] = {}
    shutil.rmtree(WORK, ignore_errors=True)  # a broker of its own, from empty
    with LocalKafka(users={USER: PASSWORD}, heap="2g", workdir=WORK / "kafka") as broker:
        topics = []
        for survey, folder, count in (item for item in plan if item[2]):
            for poison in (None, args.every):
                topic = f"poison_{survey.name}_{count}_{'every' + str(poison) if poison else 'clean'}"
                size = publish_workload(broker, topic, survey, folder, count, PARTITIONS, poison_every=poison)
                topics.append((survey, topic, count, size))
                print(f"published {count} messages ({size:.0f} MB) to {topic}", flush=True)
        runs: dict[str, list[Result]] = {topic: [] for _, topic, _, _ in topics}
        for repeat in range(args.repeat):
            order = [run for index in range(0, len(topics), 2) for run in topics[index:index + 2][::-1 if repeat % 2 else 1]]
            for survey, topic, count, size in order:
                before = cpu_seconds()
                result = fink_spark(broker, topic, survey, count, size)
                cpu.setdefault(topic, []).append(cpu_seconds() - before)
                # the messages published: Spark's count of input rows includes a batch's second read
                result = replace(result, alerts=count)
                runs[topic].append(result)
                timings.setdefault(topic, []).append(batches(topic))
                print(f"{topic}: {result.rate:.0f} records/s end to end, {result.rate_no_startup or 0:.0f} over the "
                      f"micro-batches; first batch {timings[topic][-1][0][1] if timings[topic][-1] else 0:.1f} s, "
                      f"{after_first(timings[topic][-1:]):.0f} records/s after it; {cpu[topic][-1]:.0f} CPU s", flush=True)
        rows = [(survey, topic, runs[topic], table_rows(topic, "alerts"), table_rows(topic, "quarantine"))
                for survey, topic, _, _ in topics]
    Path(args.output).write_text(report(rows, timings, cpu, args))
    print(f"results in {args.output}")


def report(rows: list[tuple[Survey, str, list[Result], int, int]], timings: dict[str, list[list[tuple[int, float]]]],
           cpu: dict[str, list[float]], args: argparse.Namespace) -> str:
    def median(results: list[Result], no_startup: bool) -> float:
        return statistics.median((r.rate_no_startup or 0) if no_startup else r.rate for r in results)

    lines = [
        f"# Poison: a topic with 1 message in {args.every} poisoned against a clean one", "",
        f"`bench/poison.py --ztf {args.ztf} --lsst {args.lsst} --every {args.every} --repeat {args.repeat}` on this "
        f"machine ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Same real alerts in both",
        "topics (2 partitions); in the poisoned one every Nth value is cut in half. The job as shipped (Iceberg",
        "table, console on, `--available-now`). Records/s counts every message read; medians of the runs. A",
        "pair is one run of each topic, one right after the other: the clean topic first in the first, third, ...",
        "pair, the poisoned one first in the others.", "",
        "| topic | runs | records | end to end (records/s) | micro-batches (records/s) | first batch (s) | "
        "after the first batch (records/s) | CPU (s) | alerts kept | quarantined |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, topic, results, kept, quarantined in rows:
        first = statistics.median(run[0][1] for run in timings[topic] if run)
        lines.append(f"| {topic} | {len(results)} | {results[0].alerts} | {median(results, False):.0f} | "
                     f"{median(results, True):.0f} | {first:.1f} | {after_first(timings[topic]):.0f} | "
                     f"{statistics.median(cpu[topic]):.0f} | {kept} | {quarantined} |")
    lines += ["", "| survey | poisoned / clean, end to end | micro-batches | after the first batch | CPU, clean / poisoned | "
              "each pair of runs, micro-batches | each pair, after the first batch | each pair, CPU |",
              "|---|---:|---:|---:|---:|---|---|---|"]
    for index in range(0, len(rows), 2):
        (survey, clean_topic, clean, _, _), (_, poisoned_topic, poisoned, _, _) = rows[index], rows[index + 1]
        # a pair: the clean and the poisoned topic's runs of one repeat, one right after the other
        pairs = ", ".join(f"{(p.rate_no_startup or 0) / (c.rate_no_startup or 1):.2f}" for c, p in zip(clean, poisoned))
        steady = ", ".join(f"{after_first([p]) / after_first([c]):.2f}"
                           for c, p in zip(timings[clean_topic], timings[poisoned_topic]))
        work = ", ".join(f"{c / p:.2f}" for c, p in zip(cpu[clean_topic], cpu[poisoned_topic]))
        lines.append(f"| {survey.name} | {median(poisoned, False) / median(clean, False):.2f} | "
                     f"{median(poisoned, True) / median(clean, True):.2f} | "
                     f"{after_first(timings[poisoned_topic]) / after_first(timings[clean_topic]):.2f} | "
                     f"{statistics.median(cpu[clean_topic]) / statistics.median(cpu[poisoned_topic]):.2f} | "
                     f"{pairs} | {steady} | {work} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
