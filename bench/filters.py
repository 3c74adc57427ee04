"""Filters' costs: a Fink filter run unchanged (a pandas UDF) against the same filter as a
Spark SQL preset; and five filters in one pass, a table each, against five jobs of one filter.

    .venv/bin/python bench/filters.py                  # 20,000 ZTF alerts, 2 rounds (about 15 minutes)
    .venv/bin/python bench/filters.py --alerts 4000 --rounds 1   # to check the harness

Publishes real ZTF alerts replicated with new ids to a topic of 2 partitions, then drains it
with the shipped configuration, in turn, round after round, the order alternating:

- no filter; Fink's `sn_candidates` as the `sn_candidate` preset (Spark SQL, in the JVM);
  and as `{fink_filter: fink_filters.ztf.livestream.filter_sn_candidates.filter.sn_candidates}`
  (fink-filters' own function, in a pandas UDF);
- the five filters of `FIVE` in one job, each with its table (`table:`), and each alone in a
  job of its own (what a user without `table:` runs).

Reports the micro-batches' time and the end to end time (medians; for the five jobs, their
sums), as ratios side by side, and the alerts each kept (they must agree: each table of the
one pass holds what the job of its filter kept). Writes bench/FILTERS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402
from run import PASSWORD, ROOT, USER, WORK, publish_workload, run_measured, shipped_config  # noqa: E402

from fink_spark.surveys import ZTF  # noqa: E402
from fink_spark.table.warehouse import load_pyiceberg  # noqa: E402
from fink_spark.testing.local_broker import LocalKafka  # noqa: E402

SN = "fink_filters.ztf.livestream.filter_sn_candidates.filter.sn_candidates"
VARIANTS = {"no filter": [], "sn_candidate preset (SQL)": [{"preset": "sn_candidate"}],
            "sn_candidates, fink-filters' function (pandas UDF)": [{"fink_filter": SN}]}
# five filters a consumer of several of Fink's streams keeps apart, by the table each names
FIVE = {"sn": {"preset": "sn_candidate"}, "early_sn": {"preset": "early_sn_candidate"},
        "kn": {"preset": "kn_candidate"}, "sn_fink": {"fink_filter": SN}, "bright": {"expression": "candidate.magpsf < 18"}}
ONE_PASS = "the five in one pass, a table each"


def drain(broker: LocalKafka, topic: str, name: str, filters: list, round_number: int) -> dict:
    out = WORK / "out" / f"filters_{round_number}_{re.sub(r'[^a-z]+', '_', name)}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = shipped_config(ZTF, broker, topic, out)
    data = yaml.safe_load(config.read_text())
    data["filters"] = filters
    config.write_text(yaml.safe_dump(data))
    seconds, peak, output = run_measured([str(ROOT / "spark-submit.sh"), "jobs/stream.py", "--config", str(config),
                                          "--available-now"])
    done = re.search(r"alerts done: (\d+) records in ([\d.]+) s of micro-batches", output)
    kept = sum(int(n) for n in re.findall(r"--- batch \d+: (\d+) alerts?", output))
    (out / "job.log").write_text(output)
    tables = {table: load_pyiceberg(out / "alerts", table).scan(selected_fields=("candid",)).to_arrow().num_rows
              for table in (item.get("table") for item in filters) if table}
    return {"seconds": seconds, "batches": float(done.group(2)) if done else float("nan"), "kept": kept, "peak": peak,
            "tables": tables}


def split_round(broker: LocalKafka, topic: str, round_number: int) -> dict[str, dict]:
    """The five filters in one pass, then each in a job of its own (the order alternating by round)."""
    one_pass = lambda: drain(broker, topic, ONE_PASS, [{**item, "table": table} for table, item in FIVE.items()],  # noqa: E731
                             round_number)
    alone = {table: (lambda table=table: drain(broker, topic, f"alone {table}", [FIVE[table]], round_number))
             for table in FIVE}
    results: dict[str, dict] = {}
    for name, run in ([(ONE_PASS, one_pass), *alone.items()] if round_number % 2 == 0
                      else [*reversed(alone.items()), (ONE_PASS, one_pass)]):
        results[name] = run()
        print(f"round {round_number}: {name}: {results[name]['seconds']:.1f} s end to end, "
              f"{results[name]['batches']:.1f} s of micro-batches, {results[name]['kept']} kept "
              f"{results[name]['tables'] or ''}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "bench" / "FILTERS.md"))
    args = parser.parse_args()
    splits: list[dict[str, dict]] = []
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with LocalKafka(users={USER: PASSWORD}, heap="2g", workdir=WORK / "kafka") as broker:
        topic = f"bench_filters_ztf_{args.alerts}"
        size = publish_workload(broker, topic, ZTF, "ztf-2026", args.alerts, 2)
        print(f"published {args.alerts} alerts ({size:.0f} MB) to {topic}", flush=True)
        for round_number in range(args.rounds):
            names = list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))  # the order alternates
            for name in names:
                result = drain(broker, topic, name, VARIANTS[name], round_number)
                runs[name].append(result)
                print(f"round {round_number}: {name}: {result['seconds']:.1f} s end to end, {result['batches']:.1f} s of "
                      f"micro-batches, {result['kept']} kept", flush=True)
            splits.append(split_round(broker, topic, round_number))
    medians = {name: {key: statistics.median(run[key] for run in results) for key in ("seconds", "batches")}
               for name, results in runs.items()}
    preset, udf = medians["sn_candidate preset (SQL)"], medians["sn_candidates, fink-filters' function (pandas UDF)"]
    kept = {name: sorted({run["kept"] for run in results}) for name, results in runs.items()}
    lines = [
        "# A Fink filter as fink-filters' own function against the same filter as a Spark SQL preset",
        "",
        f"`bench/filters.py` on this machine (2 cores), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{args.alerts:,} ZTF 2026 alerts replicated with new ids ({size:.0f} MB) on a topic of 2 partitions, drained "
        "with the shipped configuration (console on, the Iceberg table), each variant in turn, the order alternating, "
        f"{args.rounds} rounds; medians.",
        "",
        "| filters | end to end (s) | micro-batches (s) | alerts/s (micro-batches) | kept |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {m['seconds']:.1f} | {m['batches']:.1f} | {args.alerts / m['batches']:.0f} | "
          f"{', '.join(str(k) for k in kept[name])} |" for name, m in medians.items()),
        "",
        f"- The pandas UDF against the SQL preset: {udf['batches'] / preset['batches']:.2f}x the micro-batches' time, "
        f"{udf['seconds'] / preset['seconds']:.2f}x end to end.",
        f"- The SQL preset against no filter: {preset['batches'] / medians['no filter']['batches']:.2f}x the "
        "micro-batches' time.",
        f"- Both keep the same alerts: {'yes' if kept['sn_candidate preset (SQL)'] == kept[list(VARIANTS)[2]] else 'NO'}.",
        "",
        "The bundled ZTF 2026 alerts come from Fink's SN candidates topic: `sn_candidates` keeps every one of them, "
        "so the three runs above write the same table and the ratios are the filter's own cost. The pandas UDF sends "
        "9 columns of each alert to a Python worker through Arrow and back; the preset is the same condition in Spark "
        "SQL, in the JVM.",
        "",
        *split_lines(splits, args.alerts),
    ]
    Path(args.output).write_text("\n".join(lines))
    print("\n".join(lines))


def split_lines(splits: list[dict[str, dict]], alerts: int) -> list[str]:
    """The report of the five filters: one pass against five jobs, medians of the rounds."""
    one = {key: statistics.median(split[ONE_PASS][key] for split in splits) for key in ("seconds", "batches")}
    five = {key: statistics.median(sum(split[table][key] for table in FIVE) for split in splits)
            for key in ("seconds", "batches")}
    rows = [f"| {table} | `{json.dumps(FIVE[table])}` | {statistics.median(split[table]['seconds'] for split in splits):.1f} | "
            f"{statistics.median(split[table]['batches'] for split in splits):.1f} | "
            f"{', '.join(sorted({str(split[table]['kept']) for split in splits}))} | "
            f"{', '.join(sorted({str(split[ONE_PASS]['tables'][table]) for split in splits}))} |" for table in FIVE]
    agree = all(split[ONE_PASS]["tables"][table] == split[table]["kept"] for split in splits for table in FIVE)
    nothing = min(statistics.median(split[table]["batches"] for split in splits) for table in FIVE)
    return [
        "## Five filters: one pass with a table each, against five jobs of one filter",
        "",
        f"The same {alerts:,} alerts; each round drains the topic once with the five filters of `FIVE`, each naming its "
        "table, and five times with one filter each (what a user without `table:` runs); medians of the rounds.",
        "",
        "| table | filter | its own job, end to end (s) | its own job, micro-batches (s) | kept by its own job | "
        "rows of its table in the one pass |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        f"| **five jobs** | | {five['seconds']:.1f} | {five['batches']:.1f} | | |",
        f"| **one pass** | | {one['seconds']:.1f} | {one['batches']:.1f} | | |",
        "",
        f"- One pass against five jobs: {one['seconds'] / five['seconds']:.2f}x the time end to end "
        f"({five['seconds'] / one['seconds']:.1f}x faster), {one['batches'] / five['batches']:.2f}x the micro-batches' time.",
        f"- Each table of the one pass holds what its filter's own job kept: {'yes' if agree else 'NO'}.",
        f"- A job whose filter keeps no alert still takes {nothing:.1f} s of micro-batches: reading and decoding the "
        "topic, which the one pass does once for all five; the rows written "
        f"({sum(split[ONE_PASS]['tables'][table] for table in FIVE for split in splits[:1]):,}) are the same either way.",
        "",
    ]


if __name__ == "__main__":
    main()
