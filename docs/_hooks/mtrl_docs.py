"""MkDocs hooks: reference tables generated from the code at build time, and a render check.

A page asks for a generated block with a line of its own, ``<!-- mtrl:NAME -->`` or
``<!-- mtrl:NAME ARG -->`` (e.g. ``<!-- mtrl:cli mtrl-eval -->``); the block is built from the
same source the program uses (the config dataclasses, the argparse parsers, the registries of
methods, models and balancers, ``configs/*.yaml``, the protocols and published numbers), so
nothing is written twice. An unknown name is a warning, which fails ``mkdocs build --strict``.

After rendering, every page is checked for docstrings that did not render as Markdown: Sphinx
roles (``:func:`x```) and doctest prompts outside an ``Examples:`` section (they become nested
block quotes). Each is a warning too.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("mkdocs.hooks.mtrl_docs")

MARKER = re.compile(r"^<!-- mtrl:(?P<name>[\w-]+)(?: (?P<arg>[\w.-]+))? -->$", re.MULTILINE)
UNRENDERED = {
    "a Sphinx role": re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):<code>"),
    "a doctest outside an 'Examples:' section": re.compile(r"<blockquote>\s*<blockquote>"),
}


# ----------------------------------------------------------------------------- helpers
def _line(text: Any) -> str:
    """One line (a table row cannot span lines)."""
    return " ".join(str(text).split())


def _cell(text: Any) -> str:
    """Prose for a table cell: pipes, brackets and angle brackets are text, not Markdown or HTML."""
    return _line(text).replace("|", "\\|").replace("[", "\\[").replace("<", "&lt;")


def _code(text: Any) -> str:
    return f"`{_line(text)}`"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    return _cell(inspect.cleandoc(doc or "").split("\n\n")[0])


def _value(value: Any) -> str:
    """A value as it is written in YAML or a ``KEY=VALUE`` override (null and false, not None
    and False)."""
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def _literal(text: str) -> str:
    """A default as ``describe_options`` gives it (its repr), written as in YAML."""
    try:
        return _value(ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return text


def _options(spec: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """A method's options as ``name=default``: doc, one per line of the cell."""
    items = [
        f"{_code(f'{k}={_value(o.default)}')}: {_cell(o.doc)}"
        for k, o in spec.items()
        if k not in skip
    ]
    return "<br>".join(items) if items else "none"


# -------------------------------------------------------------------------- generators
def config_keys(_: str | None) -> str:
    """Every config key, a table per section: type, default and help (as ``mtrl-train --help``)."""
    from mtrl.config import Config, describe_options

    types = {
        f"{section.name}.{item.name}": item.type
        for section in fields(Config)
        for item in fields(section.default_factory())  # type: ignore[misc]
    }
    out: list[str] = []
    for section in fields(Config):
        rows = [
            (_code(key), _code(types[key]), _code(_literal(default)), _cell(text))
            for key, default, text in describe_options()
            if key.startswith(section.name + ".")
        ]
        out += [f"### `{section.name}`\n", _table(["key", "type", "default", "meaning"], rows)]
    return "\n".join(out)


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from mtrl import eval_cli, sweep
    from mtrl.analysis import cli as report
    from mtrl.cli import train_parser

    return {
        "mtrl-train": train_parser,
        "mtrl-eval": eval_cli._parser,
        "mtrl-sweep": sweep._parser,
        "mtrl-report": report._parser,
    }


def cli(prog: str | None) -> str:
    """The arguments of one command, from its argparse parser."""
    parsers = _parsers()
    if prog not in parsers:
        raise ValueError(f"cli needs one of {', '.join(parsers)}, got {prog!r}")
    parser = parsers[prog]()
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += f" {formatter._format_args(action, action.dest.upper())}"
        else:
            name = formatter._format_args(action, action.dest)
        text = formatter._expand_help(action) if action.help else ""
        if action.choices and "{" not in name:
            text += f" (one of {', '.join(map(str, action.choices))})"
        rows.append((_code(name), _cell(text)))
    return f"{_cell(parser.description)}\n\n" + _table(["argument", "meaning"], rows)


def surgery_methods(_: str | None) -> str:
    """The surgery registry: name, options with defaults, what it does (class docstring)."""
    from mtrl import surgery
    from mtrl.surgery.methods import METHODS

    rows = [
        (
            "`none`",
            "none",
            "The gradient of the mean of the per-task losses; no per-task gradients.",
        )
    ]
    for name in surgery.available():
        rows.append(
            (
                _code(name),
                _options(METHODS[name].options_spec, skip=("seed",)),
                _summary(METHODS[name].__doc__),
            )
        )
    return _table(["`surgery.name`", "options (`surgery.options.NAME`, default)", "method"], rows)


def balancers(_: str | None) -> str:
    """The balancer registry: name, options with defaults, what it does (class docstring)."""
    from mtrl import balancers as registry
    from mtrl.balancers.methods import METHODS

    rows = [("`none`", "none", "Equal weights: the mean of the per-task losses.")]
    for name in registry.available():
        rows.append(
            (_code(name), _options(METHODS[name].options_spec), _summary(METHODS[name].__doc__))
        )
    return _table(["`balancer.name`", "options (`balancer.options.NAME`, default)", "method"], rows)


def models(_: str | None) -> str:
    """The model registry: name, options with defaults, the module docstring's first paragraph."""
    from mtrl.models import MODELS

    rows = []
    for name, cls in MODELS.items():
        summary = _summary(sys.modules[cls.__module__].__doc__).removeprefix(f"``{name}``: ")
        rows.append((_code(name), _options(cls.options_spec), summary.replace("``", "`")))
    return _table(
        ["`agent.model`", "options (`agent.model_options.NAME`, default)", "network"], rows
    )


def _leading_comment(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def presets(_: str | None) -> str:
    """Every preset in ``configs/``: its base preset and its leading comment."""
    from mtrl.config import available_presets, preset_dirs

    rows = []
    for name in available_presets():
        path = next(d / f"{name}.yaml" for d in preset_dirs() if (d / f"{name}.yaml").is_file())
        base = (yaml.safe_load(path.read_text()) or {}).get("base")
        rows.append(
            (_code(name), _code(base) if base else "defaults", _cell(_leading_comment(path)))
        )
    return _table(["preset (`--config`)", "starts from", "what it is"], rows)


def protocols(_: str | None) -> str:
    """The config values each paper protocol sets, on MT10 and MT50."""
    from mtrl.protocols import PROTOCOLS

    suites = {"mt10": 10, "mt50": 50}  # the published suites; a task set of K tasks: values(K)
    columns = [(p, b) for p in PROTOCOLS.values() for b in suites]
    values = {(p.name, b): p.values(n) for p in PROTOCOLS.values() for b, n in suites.items()}
    keys = list(next(iter(values.values())))
    rows = [(_code(k), *(_code(_value(values[p.name, b][k])) for p, b in columns)) for k in keys]
    rows.append(("reported", *(f"**{p.statistic}** success" for p, _ in columns)))
    header = ["config key", *(f"`{p.name}` {b.upper()}" for p, b in columns)]
    sources = "\n".join(f"- `{p.name}`: {p.source}" for p in PROTOCOLS.values())
    return _table(header, rows) + "\n" + sources + "\n"


def published(_: str | None) -> str:
    """The published numbers on record, as ``mtrl-report`` shows them beside matching runs."""
    from mtrl.published import PUBLISHED

    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in PUBLISHED:
        row = rows.setdefault((entry.label, entry.protocol, entry.source), {})
        row[entry.benchmark] = entry
    out = []
    for (label, protocol, source), by_bench in rows.items():
        cells = []
        for bench in ("mt10", "mt50"):
            e = by_bench.get(bench)
            cells.append("—" if e is None else f"{e.success:.2f} ± {e.stderr}")
        preset_names = " / ".join(_code(e.preset) for e in by_bench.values())
        out.append((label, preset_names, _code(protocol), *cells, _cell(source)))
    return _table(["method (paper's name)", "preset", "protocol", "MT10", "MT50", "source"], out)


def api(package: str | None) -> str:
    """mkdocstrings directives for a package and each of its public submodules."""
    import importlib
    import pkgutil

    module = importlib.import_module(str(package))
    names = [package] + [
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(module.__path__)
        if not info.name.startswith("_")
    ]
    return "\n".join(f"::: {name}\n" for name in names)


GENERATORS: dict[str, Callable[[str | None], str]] = {
    "api": api,
    "config-keys": config_keys,
    "cli": cli,
    "surgery-methods": surgery_methods,
    "balancers": balancers,
    "models": models,
    "presets": presets,
    "protocols": protocols,
    "published": published,
}


# ------------------------------------------------------------------------------- hooks
def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    def expand(match: re.Match[str]) -> str:
        name, arg = match["name"], match["arg"]
        if name not in GENERATORS:
            log.warning(
                f"{page.file.src_uri}: unknown generated block '{name}'; "
                f"known: {', '.join(GENERATORS)}"
            )
            return ""
        try:
            return GENERATORS[name](arg)
        except (ValueError, ImportError) as exc:
            log.warning(f"{page.file.src_uri}: generated block '{name}': {exc}")
            return ""

    return MARKER.sub(expand, markdown)


def on_post_page(output: str, page: Any, **_: Any) -> str:
    for what, pattern in UNRENDERED.items():
        for match in pattern.finditer(output):
            context = re.sub(r"<[^>]+>", "", output[match.start() : match.start() + 300])
            log.warning(
                f"{page.file.src_uri}: {what} did not render: {' '.join(context.split())[:120]}"
            )
    return output
