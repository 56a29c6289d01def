"""Docs that cannot rot: the site builds in strict mode, every command shown works, every figure
shown exists, and the tutorial runs."""

import os
import re
import runpy
import subprocess
import sys
import types

import pytest
from doc_commands import (
    REPO,
    Command,
    check,
    commands_in,
    documentation_files,
    shell_commands,
    write_stand_in_embeddings,
)


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    return write_stand_in_embeddings(tmp_path_factory.mktemp("docs") / "embeddings.json")


def all_commands() -> list[Command]:
    return [
        command
        for path in documentation_files()
        for command in commands_in(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]


def test_documented_commands_parse_and_resolve(embeddings):
    commands = all_commands()
    programs = {c.argv[0] for c in commands}
    assert programs == {"mtrl-train", "mtrl-eval", "mtrl-sweep", "mtrl-report"}, programs
    unique = {c.argv: c for c in reversed(commands)}  # each command once, at its first place
    problems = [f"{c}\n    {p}" for c in unique.values() if (p := check(c, embeddings)) is not None]
    assert not problems, "documented commands that fail:\n" + "\n".join(problems)


def one_command(markdown: str) -> Command:
    (command,) = commands_in(markdown, "page.md")
    return command


@pytest.mark.parametrize(
    ("good", "bad", "complaint"),
    [
        (
            "mtrl-train --config smoke agent.hidden_dims=[64]",
            "mtrl-train --config smoke agent.hiden_dims=[64]",
            "unknown config key 'agent.hiden_dims'",
        ),
        (
            "mtrl-train --benchmark mt10 --surgery cagrad surgery.options.c=0.9",
            "mtrl-train --benchmark mt10 --surgery cagrad surgery.options.cc=0.9",
            "unknown option(s) ['cc']",
        ),
        (
            "mtrl-train --resume runs/x train.threads=4",
            "mtrl-train --resume runs/x train.thread=4",
            "unknown config key 'train.thread'",
        ),
        (
            "mtrl-train --resume runs/x checkpoint.every=50000",
            "mtrl-train --resume runs/x agent.actor_lr=0.001",
            "would change the experiment",
        ),
        (
            "mtrl-sweep --out runs/s --benchmarks mt10 --methods none pcgrad --executor local \\\n"
            "  train.eval_every=20000",
            "mtrl-sweep --out runs/s --benchmarks mt10 --methods none pcgrad --executor local \\\n"
            "  train.eval_evry=20000",
            "unknown config key 'train.eval_evry'",
        ),
        (
            "mtrl-sweep --out runs/s --benchmarks mt10 --methods cagrad:c=0.5 --executor local",
            "mtrl-sweep --out runs/s --benchmarks mt10 --methods cagrd:c=0.5 --executor local",
            "unknown surgery method 'cagrd'",
        ),
        ("mtrl-eval runs/x --episodes 10", "mtrl-eval runs/x --episdes 10", "unrecognized"),
        ("mtrl-report runs/a runs/b --out r", "mtrl-report --out r", "required"),
    ],
)
def test_command_check_fails_on_a_misspelling(embeddings, good, bad, complaint):
    """The check is not vacuous: the right spelling passes, a misspelled one fails with the
    program's own message."""
    assert check(one_command(f"```bash\n{good}\n```\n"), embeddings) is None
    problem = check(one_command(f"```bash\n{bad}\n```\n"), embeddings)
    assert problem is not None and complaint in problem, problem


def test_shell_snippets_are_expanded_like_a_shell():
    script = """\
SLURM="--seeds 0-9 --time 24:00:00"   # every job
for b in mt10 mt50; do
  mtrl-sweep --out runs/t-$b --config $b-care --benchmarks $b \\
    --methods none $SLURM   # one per benchmark
done
RUN=runs/r
[ -d "$RUN" ] && srun mtrl-train --resume "$RUN" || mtrl-train --out "$RUN"; echo done
"""
    assert shell_commands(script) == [
        ["mtrl-sweep", "--out", "runs/t-mt10", "--config", "mt10-care", "--benchmarks", "mt10",
         "--methods", "none", "--seeds", "0-9", "--time", "24:00:00"],
        ["mtrl-sweep", "--out", "runs/t-mt50", "--config", "mt50-care", "--benchmarks", "mt50",
         "--methods", "none", "--seeds", "0-9", "--time", "24:00:00"],
        ["[", "-d", "runs/r", "]"],
        ["mtrl-train", "--resume", "runs/r"],
        ["mtrl-train", "--out", "runs/r"],
        ["echo", "done"],
    ]  # fmt: skip
    transcript = "$ mtrl-train --config smoke && mtrl-eval runs/smoke\ntask  success  it's\n"
    assert shell_commands(transcript) == [
        ["mtrl-train", "--config", "smoke"],
        ["mtrl-eval", "runs/smoke"],
    ]


def test_only_shell_blocks_hold_commands():
    page = "```python\nmtrl-train --nonsense\n```\n\n```console\nmtrl-report runs\n```\n"
    assert [c.argv for c in commands_in(page, "page.md")] == [("mtrl-report", "runs")]


IMAGE = re.compile(r"!\[[^\]]*\]\((?P<md>[^)\s]+)[^)]*\)|<img [^>]*src=\"(?P<html>[^\"]+)\"")


def test_every_figure_shown_exists():
    shown = []
    for page in documentation_files():
        for match in IMAGE.finditer(page.read_text(encoding="utf-8")):
            target = match["md"] or match["html"]
            if not target.startswith(("http://", "https://")):
                shown.append((page, page.parent / target))
    assert shown, "no figure found: the pattern no longer matches the pages"
    missing = [
        f"{page.relative_to(REPO)}: {target}" for page, target in shown if not target.is_file()
    ]
    assert not missing, "figures shown but not in the repository:\n" + "\n".join(missing)


def test_tutorial_runs():
    """The tutorial's code, as the page includes it: the losses fall, the diagnostics are finite."""
    result = runpy.run_path(str(REPO / "docs" / "tutorial_surgery.py"))["main"]()
    first, last = result["losses"][:5].mean(0), result["losses"][-20:].mean(0)
    assert (last < 0.2 * first).all(), (first, last)
    assert all(value.isfinite().all() for value in result["diagnostics"].values())


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: a broken link, anchor, snippet or cross-reference, a docstring
    that does not render, or an unknown generated block fails. The generated tables hold what the
    code holds."""
    from mtrl import balancers, models, surgery
    from mtrl.config import available_presets, describe_options

    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stdout + build.stderr
    text = {
        name: (site / name / "index.html").read_text(encoding="utf-8")
        for name in ("reference/config", "reference/presets", "surgery", "models", "balancers")
    }
    for key, _, _ in describe_options():
        assert f"<code>{key}</code>" in text["reference/config"], key
    for name in available_presets():
        assert f"<code>{name}</code>" in text["reference/presets"], name
    for page, names in (
        ("surgery", surgery.available()),
        ("models", models.available()),
        ("balancers", balancers.available()),
    ):
        for name in names:
            assert f"<code>{name}</code>" in text[page], (page, name)


def test_readme_lists_what_is_supported():
    """The README's table of what is supported names every registered method, model, balancer
    and protocol: a new one fails here until the landing page says it exists."""
    from mtrl import balancers, models, protocols, surgery

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## What is supported") :]
    names = [*surgery.available(), *models.available(), *balancers.available(), *protocols.names()]
    missing = [name for name in names if f"`{name}`" not in table]
    assert not missing, f"README.md's 'What is supported' does not list: {missing}"


def test_torch_versions_in_prose_are_the_ones_ci_and_the_image_install():
    """A version in prose goes stale unless checked: the tested torch that the README, the
    getting-started page and the container notes name is the one .ci/run and the Dockerfile
    install."""
    ci = re.search(r"torch==([\d.]+)", (REPO / ".ci" / "run").read_text()).group(1)
    image = re.search(r"TORCH_VERSION=([\d.]+)", (REPO / "docker" / "Dockerfile").read_text())
    assert image.group(1) == ci
    pages = ["README.md", "docs/getting-started.md", "docker/README.md"]
    for page in pages:
        named = set(re.findall(r"torch\W{0,3}(\d+\.\d+\.\d+)", (REPO / page).read_text()))
        assert named <= {ci}, f"{page} names torch {sorted(named - {ci})}; CI installs {ci}"


CONFIG_KEY = re.compile(
    r"`((?:env|agent|surgery|balancer|train|checkpoint|logger)\.\w+)(?![\w(])[^`]*`"
)  # a dotted key in backticks, not a call such as `surgery.make(...)`


def test_config_keys_named_in_the_text_exist():
    """Prose names config keys too (`train.collector=overlap`, `surgery.options.c`): a renamed or
    misspelled key fails here, not only in the commands."""
    from mtrl.config import describe_options

    keys = {key for key, _, _ in describe_options()}
    named = [
        (page, match[1])
        for page in documentation_files()
        for match in CONFIG_KEY.finditer(page.read_text(encoding="utf-8"))
    ]
    assert len(named) > 20, "the pattern no longer finds the keys the pages name"
    unknown = sorted({f"{page.relative_to(REPO)}: {key}" for page, key in named if key not in keys})
    assert not unknown, "config keys named in the docs that do not exist:\n" + "\n".join(unknown)


def test_hook_warns_on_what_would_not_render(caplog):
    """What the strict build fails on besides MkDocs' own checks: a Sphinx role or a doctest
    outside an ``Examples:`` section in rendered HTML, and an unknown generated block."""
    hook = runpy.run_path(str(REPO / "docs" / "_hooks" / "mtrl_docs.py"))
    page = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="x.md"))
    rendered = "<p>Sorted names accepted by :func:<code>make</code>.</p>"
    doctest = "<blockquote>\n<blockquote>\n<blockquote>\n<p>import torch</p>"
    fine = "<p>Sorted names accepted by <a href='#m'><code>make</code></a>.</p>"
    with caplog.at_level("WARNING", logger="mkdocs.hooks.mtrl_docs"):
        hook["on_post_page"](fine, page=page)
        assert not caplog.records
        hook["on_post_page"](rendered + doctest, page=page)
        hook["on_page_markdown"]("a\n<!-- mtrl:no-such-table -->\nb", page=page)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3, messages
    assert "Sphinx role" in messages[0] and "doctest" in messages[1]
    assert "unknown generated block 'no-such-table'" in messages[2]
