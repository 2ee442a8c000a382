"""`dataprep dedupe`: exact, near (MinHash) and semantic (embedding) deduplication you can inspect.

The methods run in the order given, each on the rows the previous one kept. Each finds pairs,
groups them into connected components (reported whole), and removes a row only for one of its
own pair partners that stays (taken in the keep policy's order: no removal by chaining),
recording for every removed row that row (`kept_id`), the method and the pair's score. Row ids
are 0-based positions in the input file. Semantic dedupe first checks that the model reads the
texts' scripts (`language`).

Outputs (one directory, written atomically): records.parquet (kept rows, input schema
unchanged), removed.parquet, pairs.parquet, report.json, report.html, manifest.json.

Modules: `stage` (the stage and `sweep`), `methods` (options and the per-method runs),
`exact`, `minhash`, `semantic` (pair finders), `groups` (grouping, keep policies, removal only
for a direct pair partner that stays), `language` (can the model read the texts), `report`
(output tables, report.json and report.html). This package face re-exports the entry points.
"""

from __future__ import annotations

from dataprep.dedupe.exact import exact_pairs, normalize_text
from dataprep.dedupe.groups import KEEP_POLICIES, group_and_keep
from dataprep.dedupe.methods import DEFAULT_THRESHOLD, METHODS, DedupeConfig
from dataprep.dedupe.minhash import near_pairs
from dataprep.dedupe.semantic import cluster_pairs, semantic_pairs
from dataprep.dedupe.stage import dedupe, parse_sweep, record_texts, sweep

__all__ = [
    "DEFAULT_THRESHOLD",
    "DedupeConfig",
    "KEEP_POLICIES",
    "METHODS",
    "cluster_pairs",
    "dedupe",
    "exact_pairs",
    "group_and_keep",
    "near_pairs",
    "normalize_text",
    "parse_sweep",
    "record_texts",
    "semantic_pairs",
    "sweep",
]
