"""The commands the README and docs/ show are the product's: each `fink-spark ...` line and
each job line of `./spark-submit.sh` parses with the real parsers (a flag renamed or removed
fails here), and every command they show is one the tests run; the modules they cite exist,
their links lead to files, and the configuration reference lists every key the file may hold."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex

import pytest

from fink_spark.cli import SUMMARIES, parser_for
from fink_spark.cli.commands import add_reprocess_arguments, add_stream_arguments
from fink_spark.config.job import CONSOLE_KEYS, KAFKA_KEYS, OUTPUT_KEYS, ROOT_KEYS, TABLE_KEYS, TRIGGER_KEYS
from fink_spark.paths import PROJECT_ROOT

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
TESTS = "\n".join(path.read_text() for path in (PROJECT_ROOT / "tests").rglob("*.py"))
JOBS = {"jobs/stream.py": add_stream_arguments, "jobs/reprocess.py": add_reprocess_arguments}


def shown_commands() -> list[tuple[str, list[str]]]:
    """(where, words) of each command line in the docs' bash blocks, without comments, optional
    `[...]` parts and placeholders; continued lines joined."""
    found = []
    for doc in DOCS:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
            for line in block.splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                line = re.sub(r"\[[^\]]*\]", "", line)
                if line.startswith(("fink-spark ", "./spark-submit.sh ")) and "..." not in line and "<" not in line:
                    found.append((f"{doc.name}: {line}", shlex.split(line)))
    return found


COMMANDS = shown_commands()


@pytest.mark.parametrize(("where", "words"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_each_command_the_docs_show_parses(where: str, words: list[str]) -> None:
    if words[0] == "fink-spark":
        arguments = words[1:]
        parser = parser_for(arguments)
    else:
        job = next(word for word in words if word.startswith("jobs/"))
        arguments = words[words.index(job) + 1:]
        parser = argparse.ArgumentParser(prog=job)
        JOBS[job](parser)
    try:
        parser.parse_args(arguments)
    except SystemExit as error:  # --help exits with 0
        assert error.code == 0, f"{where}: does not parse"


def test_every_command_the_docs_show_is_run_by_a_test() -> None:
    shown = {words[1] for _, words in COMMANDS if words[0] == "fink-spark" and not words[1].startswith("-")}
    assert shown <= set(SUMMARIES)
    untested = [name for name in sorted(shown) if f'"{name}"' not in TESTS]
    assert not untested, f"no test runs fink-spark {untested}"
    assert {job for _, words in COMMANDS for job in words if job in JOBS} <= {job for job in JOBS if job in TESTS}


def test_every_module_and_name_the_docs_and_scripts_cite_exists() -> None:
    """In the docs, and in the code's strings too (a command run by a test, a script)."""
    texts = [*DOCS, *(PROJECT_ROOT / "scripts").glob("*"), PROJECT_ROOT / "spark-submit.sh",
             *(path for folder in ("tests", "bench", "examples", "jobs") for path in (PROJECT_ROOT / folder).rglob("*.py"))]
    cited = {name for text in texts for name in re.findall(r"\bfink_spark(?:\.[a-z_]\w*)+", text.read_text())}
    cited -= {"fink_spark.zip"}  # the package's archive for executors, a file
    missing = []
    for name in sorted(cited):
        module, _, attribute = name.rpartition(".")
        try:
            importlib.import_module(name)
        except ImportError:
            try:
                getattr(importlib.import_module(module), attribute)
            except (ImportError, AttributeError):
                missing.append(name)
    assert not missing, f"the docs cite what the package no longer has: {missing}"


def test_every_link_between_the_docs_leads_to_a_file() -> None:
    broken = [f"{doc.relative_to(PROJECT_ROOT)}: {target}" for doc in DOCS
              for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text())
              if "://" not in target and not (doc.parent / target).exists()]
    assert not broken, f"links to no file: {broken}"


def test_the_configuration_reference_lists_every_key_the_file_may_hold() -> None:
    sections = {"": ROOT_KEYS, "kafka.": KAFKA_KEYS, "output.": OUTPUT_KEYS, "output.table.": TABLE_KEYS,
                "output.console.": CONSOLE_KEYS, "trigger.": TRIGGER_KEYS}
    nested = {"kafka", "output", "trigger", "table", "console"}  # sections, whose keys are listed instead
    known = {prefix + key for prefix, keys in sections.items() for key in keys if key not in nested}
    listed = set(re.findall(r"^\| `([\w.]+)` \|", (PROJECT_ROOT / "docs" / "configuration.md").read_text(), flags=re.MULTILINE))
    assert listed == known, f"not in docs/configuration.md: {sorted(known - listed)}; not a key: {sorted(listed - known)}"
