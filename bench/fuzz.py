"""The fuzz tests with a larger budget and another seed than CI's.

    .venv/bin/python bench/fuzz.py --examples 100 --jobs 10 --seed 20261130

Runs tests/run/test_fuzz.py (Hypothesis: mutated keys and values among real alerts) with
`--examples` draws decoded in memory and `--jobs` draws published to the local broker and
run through the job, and the given seed. Writes bench/FUZZ.md: the command, the draws, how
long it took and pytest's verdict (a failure prints Hypothesis' smallest example).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="draws decoded in memory (CI: 6)")
    parser.add_argument("--jobs", type=int, default=10, help="draws run through the broker and the job (CI: 2)")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--output", default=str(ROOT / "bench" / "FUZZ.md"))
    args = parser.parse_args()
    env = {**os.environ, "FINK_SPARK_FUZZ_EXAMPLES": str(args.examples), "FINK_SPARK_FUZZ_JOBS": str(args.jobs)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--hypothesis-seed={args.seed}",
               "tests/run/test_fuzz.py"]
    started = time.monotonic()
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    minutes = (time.monotonic() - started) / 60
    tail = (run.stdout + run.stderr).strip().splitlines()
    verdict = tail[-1] if tail else "no output"
    lines = [
        "# Fuzzing with a larger budget", "",
        f"`bench/fuzz.py --examples {args.examples} --jobs {args.jobs} --seed {args.seed}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {minutes:.1f} min on {os.cpu_count()} cores.", "",
        f"- {args.examples} draws of fuzzed messages among the 31 real ZTF alerts, decoded in memory by the job's "
        "transformations: every real alert kept, every other message kept or quarantined with a reason;",
        f"- {args.jobs} draws published to the local broker, shuffled among the real alerts, and run through the job: "
        "it never stops, each message lands once in the table or the quarantine, every real alert is in the table;",
        "- the 5 MB schema and the 1,000-level nesting, quarantined with their reasons.", "",
        f"pytest: **{verdict}** (exit code {run.returncode}).",
    ]
    if run.returncode:
        lines += ["", "```", *tail[-60:], "```"]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(verdict)
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
