"""Our shards load into trl's SFTTrainer unchanged: the masks trl trains on are ours, packed
sequences stay apart (trl rebuilds position_ids from `seq_lengths`), and two steps run."""

from __future__ import annotations

import json

import pytest

from dataprep.records import IGNORE_INDEX

trl = pytest.importorskip("trl")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from dataprep.convert import convert
    from dataprep.tokenize import tokenize
    from tests.train_helpers import WORDS, tiny_causal_lm

    root = tmp_path_factory.mktemp("trl")
    model = tiny_causal_lm(root / "model")
    raw = root / "rows.jsonl"
    raw.write_text("".join(json.dumps({"instruction": " ".join(WORDS[i:i + 4]), "output": " ".join(WORDS[i + 1:i + 5])})
                           + "\n" for i in range(30)))
    convert([str(raw)], root / "records", template="{instruction} ")
    for name, pack in (("plain", False), ("packed", True)):
        tokenize(root / "records", root / name, tokenizer=str(model), max_len=40, pack=pack, progress=False)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "packed"])
def test_trl_sft_trainer_trains_on_our_shards_with_our_masks(shards, name, tmp_path):
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    ds = load_from_disk(str(shards / name))
    model = AutoModelForCausalLM.from_pretrained(shards / "model")
    tok = AutoTokenizer.from_pretrained(shards / "model")
    args = SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to="none",
                     max_length=None,  # trl's default of 1024 would cut longer rows without a word
                     padding_free=name == "packed", use_cpu=True, logging_steps=1, save_strategy="no")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([ds[0], ds[1]])
    ours = torch.tensor(ds[0]["labels"] + ds[1]["labels"]) if name == "packed" else torch.tensor(ds[0]["labels"])
    theirs = batch["labels"][0][: len(ours)] if name == "packed" else batch["labels"][0][: len(ds[0]["labels"])]
    assert torch.equal(theirs, ours)  # trl trains exactly the tokens we labelled
    if name == "packed":  # sequences restart where our seq_lengths say: they never attend to each other
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
        lengths = ds[0]["seq_lengths"] + ds[1]["seq_lengths"]
        assert starts == [sum(lengths[:i]) for i in range(len(lengths))]
        assert all(theirs[s] == IGNORE_INDEX for s in starts)
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))


@pytest.mark.slow
def test_trl_dpo_trainer_trains_on_our_preference_shards_with_our_masks(shards, tmp_path):
    import torch
    from datasets import Dataset, load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from dataprep.convert import convert
    from dataprep.tokenize import tokenize
    from dataprep.trl_layout import trl_preference
    from tests.train_helpers import WORDS

    raw = tmp_path / "pairs.jsonl"
    raw.write_text("".join(json.dumps({"prompt": " ".join(WORDS[i:i + 3]) + " ", "chosen": " ".join(WORDS[i + 1:i + 4]),
                                       "rejected": " ".join(WORDS[i + 5:i + 7])}) + "\n" for i in range(8)))
    convert([str(raw)], tmp_path / "records", kind="preference")
    tokenize(tmp_path / "records", tmp_path / "pref", tokenizer=str(shards / "model"), max_len=40, progress=False)
    ours, ds = load_from_disk(str(tmp_path / "pref")), trl_preference(tmp_path / "pref")
    assert ds.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]
    args = DPOConfig(output_dir=str(tmp_path / "trl"), max_steps=2, per_device_train_batch_size=2, report_to="none",
                     max_length=None, use_cpu=True, save_strategy="no", logging_steps=1)
    model = AutoModelForCausalLM.from_pretrained(shards / "model")
    # trl 1.16's DPOTrainer tokenizes the text dataset it is built with; our ids go in after
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b",
                                                                                     "rejected": "c"}]),
                         processing_class=AutoTokenizer.from_pretrained(shards / "model"))
    trainer.train_dataset = ds
    batch = trainer.data_collator([ds[0]])
    for k, side in enumerate(("chosen", "rejected")):  # trl scores exactly the tokens our labels train
        ids, labels = ours[0][f"{side}_input_ids"], ours[0][f"{side}_labels"]
        assert batch["input_ids"][k][: len(ids)].tolist() == ids
        assert batch["completion_mask"][k][: len(ids)].bool().tolist() == [x != IGNORE_INDEX for x in labels]
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))


def test_trl_preference_refuses_other_shards(shards):
    from dataprep.errors import DataprepError
    from dataprep.trl_layout import trl_preference

    with pytest.raises(DataprepError, match="holds sft shards; trl_preference takes the preference shards"):
        trl_preference(shards / "plain")
