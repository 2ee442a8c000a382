"""The fidelity counters every row builder reports into, and their manifest summary.

A row builder checks, for each trained output, that the trained token ids equal what the same
template and tokenizer produce at inference time: the prompt tokenized alone, the output tokenized
from a token boundary: one check per trained turn (chat), one per row (sft; kto: its completion),
two per row (preference: one per answer). An encoder tokenizer's kto and preference answers (scored,
never generated) are not checked. It counts each check and each mismatch by reason in the batch's
event Counter (so the counts travel back from worker processes with the other events); the stage
takes them out with `summary` into the manifest's `fidelity`:

    {"checked": n, "mismatched": n, "by_reason": {reason: n}}

A mismatched row is rejected with the reason `fidelity: <reason>` (`--on-mismatch reject`, the
default) or kept and only counted (`--on-mismatch warn`; chat: the mismatched turn is left
untrained). `checked` counts the checks made: a chat row rejected at a rendering-level mismatch
(`history_rewritten`, `prompt_not_prefix`) stops there, so its later turns are not counted.
"""

from __future__ import annotations

from collections import Counter

ON_MISMATCH = ("reject", "warn")
CHECKED = "fidelity.checked"
MISMATCH = "fidelity.mismatch."

# reason -> what it means (README and `dataprep inspect --fidelity` print these)
REASONS = {
    "prompt_seam": "the prompt tokenizes differently alone (as at inference) than inside the training sequence: "
                   "a token straddles the generation-prompt seam",
    "output_tokens": "the turn's output tokenizes differently from a token boundary (as generated) than in the "
                     "training sequence",
    "history_rewritten": "the template renders this turn differently once later turns follow (e.g. it strips "
                         "earlier reasoning); --split-turns trains it as generated",
    "prompt_not_prefix": "the rendering with the turn does not start with the generation prompt",
}


def checked(events: Counter, n: int = 1) -> None:
    events[CHECKED] += n


def mismatch(events: Counter, reason: str) -> None:
    events[MISMATCH + reason] += 1


# Rows kept with a mismatch (--on-mismatch warn): a row builder lists them beside its shard columns
# under this key; `tokenize_batch` takes them out (its `kept` argument) and the stage writes them to
# KEPT_FILE, which `dataprep inspect --fidelity` lists.
KEPT = "_fidelity_kept"
KEPT_FILE = "fidelity_kept.jsonl"


def keep(cols: dict, source: str, row: int, reasons: list[str], detail: str) -> None:
    cols.setdefault(KEPT, []).append({"source": source, "row": row, "reasons": sorted(set(reasons)), "detail": detail})


def reject_reason(reason: str) -> str:
    return f"fidelity: {reason}"


def summary(events: Counter) -> dict:
    """The fidelity figures, taken out of `events` (which keeps the other events)."""
    by_reason = {k[len(MISMATCH):]: events.pop(k) for k in sorted(k for k in events if k.startswith(MISMATCH))}
    return {"checked": int(events.pop(CHECKED, 0)), "mismatched": int(sum(by_reason.values())), "by_reason": by_reason}
