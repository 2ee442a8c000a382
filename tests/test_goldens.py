"""Golden outputs of every stage on fixed inputs: the rows and the manifest (without timings and
absolute paths) are compared with the files checked in under tests/goldens/.

They pin behaviour across re-layouts: a change that alters an output shows up here as a diff of a
readable JSON file. After an intended change, regenerate them and review the diff:

    DATAPREP_UPDATE_GOLDENS=1 .venv/bin/python -m pytest tests/test_goldens.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA

GOLDENS = Path(__file__).parent / "goldens"
UPDATE = os.environ.get("DATAPREP_UPDATE_GOLDENS") == "1"
# fingerprints and input hashes cover absolute paths (records keep their source path), which differ by checkout
VOLATILE = {"timings", "train_seconds", "seconds", "fingerprint", "sha256"}


def normalize(value, roots: dict[str, str]):
    """JSON-ready, without timings, with absolute paths replaced by <name> and floats rounded."""
    if isinstance(value, dict):
        return {str(k): normalize(v, roots) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                if k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return [normalize(v, roots) for v in value]
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, str):
        for root, name in roots.items():
            value = value.replace(root, name)
        return value
    return value


def check(name: str, value) -> None:
    path = GOLDENS / f"{name}.json"
    text = json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no golden {path}; run with DATAPREP_UPDATE_GOLDENS=1 and review it"
    expected = json.loads(path.read_text(encoding="utf-8"))
    diffs = differences(expected, json.loads(text))
    assert not diffs, f"{name} differs from {path}:\n" + "\n".join(diffs[:15])


def differences(expected, actual, where: str = "") -> list[str]:
    """Readable paths where two JSON values differ (golden first, then actual)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for k in sorted(set(expected) | set(actual)):
            if k not in actual:
                out.append(f"{where}.{k}: missing (golden {str(expected[k])[:80]})")
            elif k not in expected:
                out.append(f"{where}.{k}: new ({str(actual[k])[:80]})")
            else:
                out += differences(expected[k], actual[k], f"{where}.{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in differences(e, a, f"{where}[{i}]")]
    return [] if expected == actual else [f"{where}: golden {str(expected)[:100]} != {str(actual)[:100]}"]


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("goldens")
    return root


def roots(work: Path) -> dict[str, str]:
    return {str(work): "<work>", str(SHARED_DATA): "<shared>", str(REPO): "<repo>", str(Path.home()): "<home>"}


def manifest_of(out: Path, work: Path) -> dict:
    manifest = normalize(json.loads((out / "manifest.json").read_text()), roots(work))
    manifest["files"] = sorted(manifest.get("files", {}))  # sizes follow the absolute source paths in records
    for holder in (manifest, manifest.get("lineage") or {}, manifest.get("shards_manifest") or {}):
        if isinstance(holder.get("tokenizer"), dict):
            holder["tokenizer"].pop("path", None)  # where the packaged model or its cache lives on this machine
    return manifest


def records_of(out: Path, work: Path, name: str = "records.parquet") -> list:
    import polars as pl

    path = out / name
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
    return normalize(frame.to_dicts(), roots(work))


def rejects_of(out: Path, work: Path) -> list:
    lines = (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    return normalize([json.loads(x) for x in lines], roots(work))


def shards_of(out: Path) -> dict:
    """Row count, a digest of every column, and the first two rows in full."""
    from datasets import load_from_disk

    ds = load_from_disk(str(out))
    digest = {}
    for col in ds.column_names:
        digest[col] = hashlib.sha256(json.dumps(ds.data.column(col).to_pylist()).encode()).hexdigest()[:16]
    return {"rows": len(ds), "columns": sorted(ds.column_names), "digest": digest,
            "first": [ds[i] for i in range(min(2, len(ds)))]}


CONVERT_CASES = {
    "sft_latex": (["recipes/data/demo_latex.csv"], {"kind": "sft", "template": "latex"}),
    "sft_ko": (["{shared}/ko_alpaca_1040.json"], {"kind": "sft", "template": "ko-alpaca", "limit": 25}),
    "sft_rejects": (["tests/assets/sft_bad.jsonl"], {"kind": "sft", "fmt": "jsonl"}),
    "chat_glaive": (["{shared}/glaive_toolcall_en_demo.json"], {"kind": "chat", "limit": 20}),
    "classify_anime": (["{shared}/anime_with_synopsis.csv"],
                       {"kind": "classify", "mapping": {"text": "synopsis", "labels": "Genres"}, "limit": 30}),
    "preference_dpo": (["{shared}/dpo_en_demo.json"], {"kind": "preference", "limit": 20}),
    "text_c4": (["{shared}/c4_demo.jsonl"], {"kind": "text", "limit": 10}),
}


def converted(work: Path, case: str) -> Path:
    from dataprep.convert import convert

    out = work / "convert" / case
    if not (out / "manifest.json").is_file():
        sources, options = CONVERT_CASES[case]
        paths = [s.format(shared=SHARED_DATA) if s.startswith("{") else str(REPO / s) for s in sources]
        convert(paths, str(out), **options)
    return out


@pytest.mark.parametrize("case", sorted(CONVERT_CASES))
def test_convert_golden(work, case):
    out = converted(work, case)
    data = "records.jsonl" if CONVERT_CASES[case][1].get("fmt") == "jsonl" else "records.parquet"
    check(f"convert/{case}", {"manifest": manifest_of(out, work), "records": records_of(out, work, data),
                              "rejects": rejects_of(out, work)})


def deduped(work: Path, case: str) -> Path:
    from dataprep.dedupe import dedupe

    out = work / "dedupe" / case
    if not (out / "manifest.json").is_file():
        if case == "demo":
            dedupe(str(converted(work, "sft_latex")), str(out), methods=("exact", "near", "semantic"), threshold=0.9,
                   cache=False)
        else:
            dedupe(str(converted(work, "sft_ko")), str(out), methods=("exact", "near"), cache=False)
    return out


@pytest.mark.parametrize("case", ["demo", "ko_exact_near"])
def test_dedupe_golden(work, case):
    out = deduped(work, case)
    report = normalize(json.loads((out / "report.json").read_text()), roots(work))
    report.pop("embedding", None)  # device and throughput figures
    for m in report.get("methods", {}).values():
        for k in ("device", "rows_per_s", "seconds"):
            m.pop(k, None)
    check(f"dedupe/{case}", {
        "manifest": manifest_of(out, work),
        "kept": [(r["source"].rsplit("/", 1)[-1], r["row"]) for r in records_of(out, work)],
        "removed": [{k: r[k] for k in ("id", "kept_id", "method", "score", "row")} for r in records_of(out, work, "removed.parquet")],
        "pairs": records_of(out, work, "pairs.parquet"),
        "report_methods": {k: {kk: vv for kk, vv in v.items() if kk in ("removed", "pairs", "groups", "threshold",
                                                                         "group_size_histogram")}
                           for k, v in report.get("methods", {}).items()},
    })


TOKENIZE_CASES = {
    "sft_demo": (("dedupe", "demo"), {"tokenizer": "smollm2-135m", "max_len": 256}),
    "sft_demo_packed": (("dedupe", "demo"), {"tokenizer": "smollm2-135m", "max_len": 256, "pack": True}),
    "sft_ko_drop": (("convert", "sft_ko"), {"tokenizer": "smollm2-135m", "max_len": 400, "overflow": "drop"}),
    "chat_glaive": (("convert", "chat_glaive"), {"tokenizer": "smollm2-135m", "max_len": 512,
                                                 "train_on": "last-assistant", "tools_in_system": True}),
    "classify_anime": (("convert", "classify_anime"), {"tokenizer": "minilm", "max_len": 128}),
    "preference_dpo": (("convert", "preference_dpo"), {"tokenizer": "smollm2-135m", "max_len": 256}),
    "text_c4": (("convert", "text_c4"), {"tokenizer": "smollm2-135m", "max_len": 128, "overflow": "truncate"}),
    "text_c4_windows": (("convert", "text_c4"), {"tokenizer": "smollm2-135m", "max_len": 128, "stride": 16}),
}


@pytest.mark.parametrize("case", sorted(TOKENIZE_CASES))
def test_tokenize_golden(work, case):
    from dataprep.tokenize import tokenize

    (stage, upstream), options = TOKENIZE_CASES[case]
    src = deduped(work, upstream) if stage == "dedupe" else converted(work, upstream)
    out = work / "tokenize" / case
    tokenize(str(src), str(out), progress=False, **options)
    check(f"tokenize/{case}", {"manifest": manifest_of(out, work), "shards": shards_of(out),
                               "rejects": rejects_of(out, work)})


SPLIT_CASES = {  # a stratified classify split, and one that reads a dedupe output's pairs
    "classify_anime": (lambda work: converted(work, "classify_anime"), {"val": 0.2, "test": 0.2, "seed": 0}),
    "ko_deduped": (lambda work: deduped(work, "ko_exact_near"), {"val": 0.2, "test": 0.2, "seed": 0}),
}


@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
def test_split_golden(work, case):
    from dataprep.split import split

    source, options = SPLIT_CASES[case]
    out = work / "split" / case
    split(str(source(work)), str(out), **options)
    check(f"split/{case}", {"manifest": manifest_of(out, work),
                            **{part: [r["row"] for r in records_of(out / part, work)] for part in ("train", "val", "test")},
                            "val_manifest": manifest_of(out / "val", work)})


@pytest.mark.slow
def test_train_and_merge_goldens(work, tmp_path):
    """A tiny model trained for two steps on shards of the tokenize stage: the manifests of train and
    merge (metrics reduced to their names: their values are pinned by the training tests)."""
    from dataprep.convert import convert
    from dataprep.tokenize import tokenize
    from tests.train_helpers import WORDS, tiny_causal_lm
    from training.merge import merge_adapter
    from training.run import train

    model = tiny_causal_lm(work / "tiny-lm")
    raw = work / "tiny.jsonl"
    raw.write_text("".join(json.dumps({"instruction": " ".join(WORDS[i:i + 3]), "output": " ".join(WORDS[i + 1:i + 4])})
                           + "\n" for i in range(20)))
    convert([str(raw)], str(work / "tiny-rec"), kind="sft", template="{instruction} ")
    tokenize(str(work / "tiny-rec"), str(work / "tiny-tok"), tokenizer=str(model), max_len=32, progress=False)
    train(str(work / "tiny-tok"), str(work / "tiny-train"), task="sft", model=str(model), quant="none", max_steps=2,
          micro_batch=4, report_to="none", val_size=0.2, eval_steps=1)
    merge_adapter(str(work / "tiny-train"), str(work / "tiny-merged"), dtype="float32")
    results = {}
    for stage in ("train", "merged"):
        m = manifest_of(work / f"tiny-{stage}", work)
        if "metrics" in m:
            m["metrics"] = sorted(m["metrics"])
        m.pop("params", None)
        for inp in m["inputs"]:  # shards and adapters hold run-specific bytes (state.json, TensorBoard events)
            inp.pop("sha256", None)
        results[stage] = m
    check("train/tiny_sft", results)
