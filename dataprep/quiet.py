"""A clean log for the command line: silence library output that says nothing to our user,
keep real warnings. Called once by the CLI before any library is imported; library users keep
the libraries' own defaults."""

from __future__ import annotations

import logging
import os
import warnings

# Said on every run, about things our user neither chose nor can act on.
NOISE = (
    # bitsandbytes on CPUs with AVX512-BF16: an optional kernel package is not installed (the fallback is used)
    ("bitsandbytes", None),
    # transformers 5 renamed the gradient-checkpointing methods that peft and sentence-transformers still call
    (None, r".*gradient_checkpointing.* is deprecated"),
)


def quiet_libraries() -> None:
    """Progress bars of model loading and Hub downloads off (ours stay), bitsandbytes' kernel notice
    and known deprecation chatter off. Errors and other warnings still show."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also transformers' "Loading weights" bars
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for logger, message in NOISE:
        if logger:
            logging.getLogger(logger).setLevel(logging.ERROR)
        if message:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    # transformers 5's table of head weights a task model initialises (classify, reward and MLM heads are new by
    # design), and its "checkpoint seem corrupted" about such a new head's tied bias; a real mismatch still raises
    logging.getLogger("transformers.modeling_utils").addFilter(
        lambda record: not any(m in record.getMessage() for m in ("LOAD REPORT", "both are absent from the checkpoint")))
