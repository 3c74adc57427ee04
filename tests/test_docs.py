"""The commands the README and docs/ show are the product's: each `fink-spark ...` line and
each job line of `./spark-submit.sh` parses with the real parsers (a flag renamed or removed
fails here), and every command they show is one the tests run."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex

import pytest

from fink_spark.cli import SUMMARIES, parser_for
from fink_spark.cli.commands import add_reprocess_arguments, add_stream_arguments
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


def test_every_module_and_name_the_docs_cite_exists() -> None:
    cited = {name for doc in DOCS for name in re.findall(r"\bfink_spark(?:\.[a-z_]\w*)+", doc.read_text())}
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
