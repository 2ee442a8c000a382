"""Several processes (training.dist) on the CPU with gloo: one step on 2 ranks equals one process
on the same global batch (loss, gradient norm, updated weights), rank 0 alone writes the output,
and a bad launch configuration is a one-line error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataprep.cli import cli
from dataprep.errors import DataprepError
from tests.train_helpers import tiny_sft_run, tiny_tokenizer, write_shards
from training.data import collate_flat

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sft_run(tmp_path_factory.mktemp("dist"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _micro_batches(rows):
    """Two micro-batches with very different trained-token counts (3 rows vs 9), so a loss that
    each rank normalised by its own count would differ from the global one."""
    return [collate_flat(rows[:3]), collate_flat(rows[3:12])]


def _one_step(model_dir: str, batches: list, parallel: bool):
    """One train_step (SGD, lr 0.5) of a tiny Llama; (Step, trainable weights after it)."""
    from transformers import AutoModelForCausalLM, get_scheduler

    from training import dist
    from training.loop import train_step
    from training.sft import causal_lm_loss_sum

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    wrapped = dist.wrap(model, causal_lm_loss_sum) if parallel else None
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    step = train_step(model, batches, causal_lm_loss_sum, opt, get_scheduler("constant", opt), wrapped)
    return step, {k: v.detach().clone() for k, v in model.named_parameters()}


def _rank_worker(rank: int, world: int, port: int, model_dir: str, rows: list, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    from training import dist

    dist.setup()
    batches = dist.shard(_micro_batches(rows))  # rank r: micro-batch r of the one-process order
    step, params = _one_step(model_dir, batches, parallel=True)
    torch.save({"step": step, "params": params, "world": dist.world()}, Path(out) / f"rank{rank}.pt")
    import torch.distributed as td

    td.destroy_process_group()


def test_two_gloo_ranks_give_the_loss_and_gradients_of_one_process(tiny, tmp_path):
    rows = tiny["rows"]
    one, one_params = _one_step(str(tiny["model"]), _micro_batches(rows), parallel=False)
    torch.multiprocessing.start_processes(_rank_worker, args=(2, _free_port(), str(tiny["model"]), rows, str(tmp_path)),
                                          nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    for r in ranks:
        assert r["step"].trained_tokens == one.trained_tokens and r["step"].tokens == one.tokens
        assert r["step"].loss == pytest.approx(one.loss, rel=1e-6)
        assert r["step"].grad_norm == pytest.approx(one.grad_norm, rel=1e-5)
        for name, w in one_params.items():
            torch.testing.assert_close(r["params"][name], w, rtol=1e-5, atol=1e-6, msg=name)
    # the check can fail: normalising each rank by its own trained tokens gives another loss
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in _micro_batches(rows)]
    assert counts[0] * 2 < counts[1]


def _torchrun(shards: Path, model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "dataprep", "train", str(shards), "-o", str(out), "--model", str(model), "--max-steps", "3",
           "--micro-batch", "2", "--lr", "5e-3", "--report-to", "none", "--warmup-ratio", "0", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # a hang: end the launcher and its ranks, then fail
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def one_process_sft(tiny, tmp_path_factory):
    """The reference: 1 process, micro-batch 2, grad accumulation 2 (the global batch of 2 ranks x 2)."""
    from training.sft import SFTConfig, train_sft

    out = tmp_path_factory.mktemp("one") / "adapter"
    train_sft(str(tiny["packed"]), str(out), SFTConfig(
        model=str(tiny["model"]), micro_batch=2, grad_accum=2, lr=5e-3, max_steps=3, report_to="none",
        lora_dropout=0.0, warmup_ratio=0.0))
    return out


def _assert_same_steps(one: Path, two: Path) -> dict:
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m2["processes"] == 2 and m1["processes"] == 1
    for a, b in zip(m1["train_loss"], m2["train_loss"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    return m2


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_train_on_two_processes_matches_one_and_only_rank0_writes(tiny, one_process_sft, tmp_path, parallel):
    """torchrun -m dataprep train on 2 gloo ranks (micro-batch 2 each) against 1 process with
    grad accumulation 2: the same global batches, so the same losses, gradient norms and adapter."""
    from safetensors.torch import load_file

    two = tmp_path / "runs" / "two"
    done = _torchrun(tiny["packed"], tiny["model"], two, "--lora-dropout", "0",
                     *(["--fsdp"] if parallel == "fsdp" else []))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 3 steps") == 1  # rank 0 alone reports
    assert sorted(p.name for p in two.parent.iterdir()) == ["two"]  # nothing left beside the output
    m2 = _assert_same_steps(one_process_sft, two)
    assert m2["parallel"] == parallel
    m1 = json.loads((one_process_sft / "metrics.json").read_text())
    assert (m2["tokens"], m2["trained_tokens"]) == (m1["tokens"], m1["trained_tokens"])
    a, b = (load_file(d / "adapter_model.safetensors") for d in (one_process_sft, two))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
    assert json.loads((two / "manifest.json").read_text())["counts"]["out"] == 14
    if parallel == "ddp":  # rank 0 finds the output current: every rank stops, nobody trains or waits
        again = _torchrun(tiny["packed"], tiny["model"], two, "--lora-dropout", "0")
        assert again.returncode == 0 and again.stdout.count("is up to date") == 1, again.stderr[-3000:]


def test_classify_on_two_processes_matches_one(tmp_path):
    """--task classify on 2 gloo ranks against 1 process with grad accumulation 2: the same losses,
    and the same tuned threshold and validation micro-F1 (every rank evaluates all rows)."""
    from tests.train_helpers import classify_rows, tiny_encoder
    from training.classify import ClassifyConfig, train_classifier

    names = ["a", "b", "c", "d"]
    model = tiny_encoder(tmp_path / "enc")
    config = json.loads((model / "config.json").read_text())  # no dropout: each rank draws its own masks
    (model / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.0,
                                                   "attention_probs_dropout_prob": 0.0}))
    shards = write_shards(tmp_path / "cls", classify_rows(64, names), "classify", tiny_tokenizer(), label_names=names)
    one = tmp_path / "one"
    train_classifier(str(shards), str(one), ClassifyConfig(
        model=str(model), micro_batch=2, grad_accum=2, lr=5e-3, max_steps=3, report_to="none", warmup_ratio=0.0))
    done = _torchrun(shards, model, tmp_path / "two", "--task", "classify")
    assert done.returncode == 0, done.stderr[-3000:]
    m2 = _assert_same_steps(one, tmp_path / "two")
    m1 = json.loads((one / "metrics.json").read_text())
    assert m2["val"]["f1_micro"] == pytest.approx(m1["val"]["f1_micro"], abs=1e-6)
    assert m2["threshold"] == pytest.approx(m1["threshold"], abs=1e-6)


@pytest.mark.parametrize(("env", "args", "message"), [
    ({"WORLD_SIZE": "2"}, [], "WORLD_SIZE=2 but RANK, LOCAL_RANK not set"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, [], "RANK=2 / LOCAL_RANK=0 outside WORLD_SIZE=2"),
    ({"WORLD_SIZE": "two"}, [], "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, ["--gpus", "4"], "--gpus 4 inside a launcher of 2 processes"),
    ({}, ["--gpus", "2"], "--gpus 2 but this machine has no GPU"),
])
def test_a_bad_launch_configuration_is_one_line(tiny, tmp_path, runner, monkeypatch, env, args, message):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    res = runner.invoke(cli, ["train", str(tiny["packed"]), "-o", str(tmp_path / "out"), "--model",
                              str(tiny["model"]), *args])
    assert res.exit_code != 0
    assert res.output.startswith("Error: ") and message in res.output and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "out").exists()


def test_gpus_launches_accelerate_on_that_many_processes_without_the_flag(monkeypatch):
    from dataprep.commands import train as train_cmd

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["dataprep", "train", "shards", "-o", "out", "--gpus", "2", "--lr", "1e-4"])
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    train_cmd.launch(2)
    (cmd,) = calls
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--multi_gpu" in cmd
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[-8:] == ["-m", "dataprep", "train", "shards", "-o", "out", "--lr", "1e-4"]


def test_fsdp_with_4bit_needs_a_float_quant_storage_matching_the_weights():
    from training.dist import check_fsdp_quant

    check_fsdp_quant(torch.bfloat16, "4bit", "bfloat16")
    check_fsdp_quant(torch.float32, "none", "uint8")  # not quantised: nothing to check
    for dtype, storage in ((torch.bfloat16, "uint8"), (torch.float32, "bfloat16")):
        with pytest.raises(DataprepError, match="needs bnb_4bit_quant_storage"):
            check_fsdp_quant(dtype, "4bit", storage)
