"""The mtrl commands the documentation shows, and the check that each one still works.

A command is found in a fenced shell block (```bash, ```console, or no language) of README.md,
of a page under docs/ or of a file a page includes (``--8<-- "path"``). The block is read as a
small shell script: backslash continuations joined, comments dropped, ``NAME=value`` variables
and ``for x in a b; do ... done`` loops expanded, ``srun`` prefixes and ``$`` prompts skipped, and
command lists split at ``;``, ``&&``, ``||`` and ``|``.

Each command goes through the real parser of its program; ``mtrl-train`` and ``mtrl-sweep``
commands are also resolved to their configs (every run of a sweep, for its first seed) with the
same functions the programs call, without training. Commands that name an existing run folder or
checkpoint (``--resume``, ``mtrl-eval``, ``mtrl-report``) are parsed; resume overrides are
checked against the config and the keys a resume may change.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = ("mtrl-train", "mtrl-eval", "mtrl-sweep", "mtrl-report")
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "zsh"}
PREFIXES = {"srun", "then", "else", "do", "time", "exec", "!"}
"""Words before a command that do not change it."""

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_SNIPPET = re.compile(r"^[ \t]*--8<--[ \t]+\"(?P<path>[^\"]+)\"", re.MULTILINE)
_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_]\w*)=(?P<value>.*)$")
_FOR = re.compile(r"^for (?P<name>[A-Za-z_]\w*) in (?P<values>[^;]*); do$")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_OPERATORS = {";", "&&", "||", "|", "&"}


@dataclass(frozen=True)
class Command:
    where: str
    """``file:line`` of the code block."""
    argv: tuple[str, ...]
    """The program, then its arguments."""

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


# --------------------------------------------------------------------------- extraction
def documentation_files(repo: Path = REPO) -> list[Path]:
    """README.md, every page under docs/ and every Markdown file a page includes."""
    pages = [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]
    included = {
        path
        for page in pages
        for match in _SNIPPET.finditer(page.read_text(encoding="utf-8"))
        for path in (repo / "docs" / match["path"], repo / match["path"])
        if path.suffix == ".md" and path.is_file()
    }
    return [*pages, *sorted(included - set(pages))]


def commands_in(text: str, where: str) -> list[Command]:
    """The mtrl commands of every shell code block of a Markdown text."""
    found = []
    for block in _FENCE.finditer(text):
        if block["lang"].lower() not in SHELL_LANGUAGES:
            continue
        line = text.count("\n", 0, block.start()) + 1
        for argv in shell_commands(block["body"]):
            if argv[0] in PROGRAMS:
                found.append(Command(f"{where}:{line}", tuple(argv)))
    return found


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell snippet (see the module docstring for what is expanded)."""
    lines = script.replace("\\\n", " ").splitlines()
    if any(line.startswith("$ ") for line in lines):  # a transcript: only prompts are commands
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    return list(_run(lines, {}))


def _run(lines: list[str], variables: dict[str, str]) -> Iterator[list[str]]:
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        loop = _FOR.match(line)
        if loop:
            end = _matching_done(lines, i)
            for value in shlex.split(_expand(loop["values"], variables)):
                yield from _run(lines[i:end], {**variables, loop["name"]: value})
            i = end + 1
            continue
        assignment = _assignment(line)
        if assignment is not None:
            name, value = assignment
            variables[name] = _expand(value, variables)
            continue
        yield from _simple_commands(_expand(line, variables))


def _assignment(line: str) -> tuple[str, str] | None:
    """``(name, value)`` when the line only sets a variable (``NAME=value``, maybe quoted)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    match = _ASSIGNMENT.match(words[0]) if len(words) == 1 else None
    return None if match is None else (match["name"], match["value"])


def _matching_done(lines: list[str], start: int) -> int:
    depth = 1
    for j in range(start, len(lines)):
        stripped = lines[j].strip()
        depth += bool(_FOR.match(stripped)) - (stripped == "done")
        if depth == 0:
            return j
    raise ValueError(f"'for' without 'done' in: {lines[start - 1].strip()}")


def _expand(text: str, variables: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` of the snippet's own variables; others stay as written."""
    return _VARIABLE.sub(lambda m: variables.get(m[1] or m[2], m[0]), text)


def _simple_commands(line: str) -> Iterator[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # not shell (e.g. program output): only an error if it names a program
        if any(program in line for program in PROGRAMS):
            raise ValueError(f"cannot split this shell line: {line}") from None
        return
    words: list[str] = []
    for token in [*tokens, ";"]:
        if token not in _OPERATORS:
            words.append(token)
            continue
        while words and (words[0] in PREFIXES or _ASSIGNMENT.match(words[0])):
            words.pop(0)
        if words:
            yield words
        words = []


# ------------------------------------------------------------------------------ checking
def check(command: Command, stand_in_embeddings: Path) -> str | None:
    """None when the command parses (and resolves), else what its program says is wrong.

    ``agent.task_embeddings=FILE`` naming a file that does not exist here is replaced by
    ``stand_in_embeddings``: the docs show where such a file goes, not the file.
    """
    program, *args = command.argv
    args = [_embeddings_stand_in(word, stand_in_embeddings) for word in args]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            CHECKS[program](args)
    except SystemExit as stop:
        if stop.code not in (0, None):
            return errors.getvalue().strip() or f"{program} exited with {stop.code}"
    except ValueError as exc:  # ConfigError, SweepError
        return f"{program}: error: {exc}"
    return None


def _embeddings_stand_in(word: str, stand_in: Path) -> str:
    key, sep, value = word.partition("=")
    if sep and key == "agent.task_embeddings" and not (REPO / value).is_file():
        return f"{key}={stand_in}"
    return word


def write_stand_in_embeddings(path: Path) -> Path:
    """A task embeddings file with a vector for every MT50 task (MT10's are among them)."""
    from mtrl.envs import parse_benchmark

    names = parse_benchmark("mt50").task_names
    path.write_text(json.dumps({name: [0.1, -0.2, 0.3] for name in names}), encoding="utf-8")
    return path


def _check_train(args: list[str]) -> None:
    from mtrl.checkpoint import experiment_differences
    from mtrl.cli import _flag_overrides, resolve_train_config, train_parser
    from mtrl.config import ConfigError, load_config

    parsed = train_parser().parse_intermixed_args(args)
    if parsed.resume is None:
        resolve_train_config(parsed)
        return
    # The run folder is not here: check the overrides against a run of the default config.
    requested = load_config(None, [*_flag_overrides(parsed), *parsed.overrides])
    changes = experiment_differences(load_config(None), requested)
    if changes:
        raise ConfigError(f"--resume: {changes[0]} would change the experiment")


def _check_sweep(args: list[str]) -> None:
    from mtrl import sweep

    parsed = sweep._parser().parse_intermixed_args(args)
    sweep._collect_overrides(parsed)
    if parsed.executor_config is None:  # a named executor file is not here to read
        sweep.load_executor_options(None, sweep._executor_flags(parsed))
    # Every seed is a non-negative integer (parse_seeds) and cannot make a config invalid: the
    # grid is resolved for the first one, else ten seeds would take ten times as long.
    first_seed = sweep.parse_seeds(parsed.seeds)[0]
    sweep.build_plan(
        parsed.out,
        parsed.benchmarks,
        parsed.methods,
        [str(first_seed)],
        parsed.overrides,
        parsed.vary,
        parsed.config,
    )


def _check_eval(args: list[str]) -> None:
    from mtrl import eval_cli

    eval_cli._parser().parse_args(args)


def _check_report(args: list[str]) -> None:
    from mtrl.analysis import cli as report

    report._parser().parse_args(args)


CHECKS: dict[str, Callable[[list[str]], None]] = {
    "mtrl-train": _check_train,
    "mtrl-eval": _check_eval,
    "mtrl-sweep": _check_sweep,
    "mtrl-report": _check_report,
}
