"""Analysis of finished runs: what ``mtrl-report`` does, usable as functions.

One job per module, each importing only those listed before it (checked in CI):

- :mod:`~mtrl.analysis.stats`: means, IQMs, probabilities of improvement, bootstrap intervals;
- :mod:`~mtrl.analysis.runs`: run folders read, grouped into table rows;
- :mod:`~mtrl.analysis.summary`: each row's statistics against its baseline;
- :mod:`~mtrl.analysis.controls`: single-task controls against the same task in a task set, and
  whether a task alone is held by each budget;
- :mod:`~mtrl.analysis.tables`: Markdown and CSV tables;
- :mod:`~mtrl.analysis.figures`: learning curves and the per-task heatmap;
- :mod:`~mtrl.analysis.triad`: the PCGrad paper's Figure 4 from the gradient diagnostics;
- :mod:`~mtrl.analysis.claims`: the PCGrad paper's claims with verdicts;
- :mod:`~mtrl.analysis.report`: one report folder; :mod:`~mtrl.analysis.cli`: ``mtrl-report``.
"""
