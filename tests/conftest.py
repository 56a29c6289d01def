"""Tests run with one torch thread: on small CPU machines more threads only busy-wait."""

import contextlib
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)

# submitit configures logging with logging.config.dictConfig when it is first imported, and
# dictConfig closes every handler the process has made so far. rliable imports absl, whose
# (unattached) handler holds the stream that was sys.stderr at its import: under pytest, the
# capture's stream, which the close would break for the rest of the session. Importing submitit
# first, here, lets its configuration run before any absl handler exists.
with contextlib.suppress(ImportError):
    import submitit  # noqa: F401
