"""mtrl-report's command line: tables and plots of many runs, the PCGrad paper's Figure 4
(``--triad-figure``) or its claims (``--claims``). A thin layer over the analysis modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mtrl.analysis import stats
from mtrl.analysis.claims import claims_markdown
from mtrl.analysis.report import build_report
from mtrl.analysis.runs import group_runs, load_runs, protocol_label
from mtrl.analysis.tables import legend, markdown_table, statistic_note
from mtrl.analysis.triad import COMPONENTS, METRICS, write_triad_figure
from mtrl.clitools import USAGE_ERROR, OneLineParser

PROG = "mtrl-report"


def _reps(text: str) -> int:
    try:
        reps = int(text)
    except ValueError:
        reps = 0
    if reps < stats.MIN_REPS:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= {stats.MIN_REPS} (2000 for a report, 50000 for numbers to "
            f"publish), got '{text}'"
        )
    return reps


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Tables (Markdown, CSV) and plots (learning curves, per-task heatmap) of the "
        "runs in RUN_OR_SWEEP_DIR..., with 95% stratified-bootstrap intervals (rliable). Runs of "
        "different benchmark protocols are never pooled; single-task runs of a task of a task "
        "set are compared with it task by task. With --triad-figure: the PCGrad paper's Figure 4 "
        "(the tragic triad) from the runs instead; with --claims: the paper's claims tested.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_SWEEP_DIR")
    parser.add_argument(
        "--out", type=Path, default=Path("report"), help="output folder (default: ./report)"
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="tables only (no matplotlib needed)"
    )
    parser.add_argument(
        "--reps",
        type=_reps,
        default=stats.DEFAULT_REPS,
        help=f"bootstrap replicates per interval (default {stats.DEFAULT_REPS}; rliable's own "
        "default, 50000, for numbers to publish)",
    )
    parser.add_argument(
        "--bootstrap-seed",
        type=int,
        default=stats.DEFAULT_SEED,
        help=f"seed of the bootstrap: the same runs and seed give the same intervals "
        f"(default {stats.DEFAULT_SEED})",
    )
    parser.add_argument(
        "--baseline",
        metavar="METHOD_LABEL",
        help="the row (its label in the table, e.g. 'none' or 'pcgrad') every other row of its "
        "protocol is compared with; default: for each row, the row without surgery and balancer "
        "and otherwise the same config",
    )
    parser.add_argument(
        "--triad-figure",
        type=Path,
        metavar="PNG",
        help="write the PCGrad paper's Figure 4 from runs with tragic-triad diagnostics: "
        "curvature and curvature / squared gradient norm of the summed loss; share of positive "
        "cosines and, among conflicting task pairs, of condition (a) and of xi <= 1; per-task "
        "success or return; one colour per method (no tables)",
    )
    parser.add_argument(
        "--component",
        choices=COMPONENTS,
        default=COMPONENTS[0],
        help="whose loss's diagnostics --triad-figure plots (default: critic)",
    )
    parser.add_argument(
        "--triad-metric",
        choices=METRICS,
        default=METRICS[0],
        help="the last panel of --triad-figure: per-task evaluation success or return "
        "(default: success)",
    )
    parser.add_argument(
        "--claims",
        metavar="TASK",
        help="test the PCGrad paper's claims instead (Figure 4 on the task sets with TASK, the "
        "hard task; Figure 3's ordering; Section 5.2 on MT10) with verdicts; writes "
        "OUT/claims.md (no plots)",
    )
    return parser


INSTALL_REPORT = (
    "pip install -e '.[report]' in a checkout of mtrl (pip install 'mtrl[report]' otherwise)"
)


def _missing_dependency(plots: bool) -> str:
    """One line naming what to install, or ''."""
    try:
        import rliable.library  # noqa: F401
    except ImportError:
        return f"the statistics need rliable, of the report extra: {INSTALL_REPORT}"
    except Exception as exc:  # arch 7 (rliable's) raises TypeError on import beside pandas 3
        return (
            f"rliable does not import ({type(exc).__name__}: {exc}); its arch 7 needs pandas<3: "
            f"{INSTALL_REPORT}"
        )
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return f"the plots need matplotlib: {INSTALL_REPORT}, or pass --no-plots"
    return ""


def report_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    figure = args.triad_figure is not None
    if problem := _missing_dependency(plots=figure or not (args.no_plots or args.claims)):
        return _error(problem)
    notes: list[str] = []
    try:
        if figure:
            files = write_triad_figure(
                args.paths, args.triad_figure, args.component, args.triad_metric, args.reps,
                args.bootstrap_seed, notes,
            )  # fmt: skip
        elif args.claims:
            files = [_write_claims(args, notes)]
        else:
            return _report(args)
    except ValueError as exc:
        _print_notes(notes)
        return _error(str(exc))
    _print_notes(notes)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _write_claims(args: argparse.Namespace, notes: list[str]) -> Path:
    runs, _ = load_runs(args.paths, notes)
    markdown = claims_markdown(group_runs(runs, notes), args.claims, args.reps, args.bootstrap_seed)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "claims.md"
    path.write_text(markdown, encoding="utf-8")
    return path


def _report(args: argparse.Namespace) -> int:
    report = build_report(
        args.paths, args.out, not args.no_plots, args.reps, args.bootstrap_seed, args.baseline
    )
    _print_notes(report.notes)
    if not report.grouped:
        return _error("no finished runs to report")
    print(legend(args.reps, args.bootstrap_seed))
    for key, rows in report.grouped.items():
        print(f"\n{protocol_label(key)}\n{statistic_note(key, rows)}\n{markdown_table(rows)}")
    print("\nwrote " + ", ".join(str(f) for f in report.files))
    return 0


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"{PROG}: {note}", file=sys.stderr)


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(report_main())
