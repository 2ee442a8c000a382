"""Training on several processes (GPUs): accelerate's launcher and process state, data parallelism.

`dataprep train` runs as one process, or as N under `accelerate launch` / `torchrun` (or
`dataprep train --gpus N`, which runs `accelerate launch` for the user). With N processes:

- each rank collates and trains its own share of the shuffled micro-batches (`shard`);
- the loss of an optimizer step is normalised by the trained tokens of ALL ranks and all
  accumulation steps (`sum_across`), so N processes and 1 give the same loss and gradients on
  the same global batch (transformers#34242 is what goes wrong when each rank divides by its own);
- DDP (`wrap`) all-reduces the gradients during the backward pass; FSDP2 (`--fsdp`) shards the
  model per decoder layer for models that do not fit one GPU;
- rank 0 alone writes the output (`run_stage_on_main`: the stage contract, atomic as ever); the
  other ranks train alongside it and write nothing. Metrics are summed (tokens) or maxed (memory,
  seconds) across ranks.

Everything here is a no-op in a single process, so the single-GPU path is unchanged.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from dataprep.errors import DataprepError

LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def launched() -> bool:
    """True when a launcher (accelerate launch, torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1") or "1") > 1


def check_launch_env(env: dict[str, str] | None = None, gpus: int | None = None) -> tuple[int, int, int]:
    """(world size, rank, local rank) from the launcher's variables, or a one-line error naming
    what is wrong with them. Single-process runs give (1, 0, 0)."""
    import torch

    env = os.environ if env is None else env
    values = {}
    for name in LAUNCH_VARS:
        raw = env.get(name)
        if raw is None or raw == "":
            values[name] = None
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            raise DataprepError(f"{name}={raw!r} is not an integer; launch with `accelerate launch`, `torchrun` "
                                "or `dataprep train --gpus N`") from None
    world = values["WORLD_SIZE"] or 1
    if world < 1:
        raise DataprepError(f"WORLD_SIZE={world} must be at least 1; launch with `dataprep train --gpus N`")
    if world == 1:
        return 1, 0, 0
    rank, local = values["RANK"], values["LOCAL_RANK"]
    if rank is None or local is None:
        missing = ", ".join(n for n in ("RANK", "LOCAL_RANK") if values[n] is None)
        raise DataprepError(f"WORLD_SIZE={world} but {missing} not set; launch with `accelerate launch`, `torchrun` "
                            "or `dataprep train --gpus N` rather than setting WORLD_SIZE by hand")
    if not 0 <= rank < world or not 0 <= local < world:
        raise DataprepError(f"RANK={rank} / LOCAL_RANK={local} outside WORLD_SIZE={world}; check the launcher's "
                            "--num_processes / --nproc-per-node")
    if gpus is not None and gpus != world:
        raise DataprepError(f"--gpus {gpus} inside a launcher of {world} processes; drop --gpus (the launcher "
                            "already chose the processes)")
    if torch.cuda.is_available() and local >= torch.cuda.device_count():
        raise DataprepError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPU(s); launch at "
                            f"most {torch.cuda.device_count()} processes per machine")
    return world, rank, local


def setup() -> None:
    """Join the process group when launched as one of several (accelerate's PartialState: NCCL on
    GPUs, gloo on CPUs, one GPU per local rank); nothing in a single process."""
    if not launched():
        return
    check_launch_env()
    import atexit

    from accelerate import PartialState

    PartialState()
    atexit.register(_leave)  # a process leaving with gloo's threads still up aborts ("terminate called ...")


def _leave() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def _group():
    import torch.distributed as td

    return td if td.is_available() and td.is_initialized() and td.get_world_size() > 1 else None


def world() -> int:
    td = _group()
    return td.get_world_size() if td else 1


def rank() -> int:
    td = _group()
    return td.get_rank() if td else 0


def is_main() -> bool:
    return rank() == 0


def shard(items: list, seed_rank: int | None = None) -> list:
    """This rank's share of `items`: every world()-th one, starting at its rank (micro-batch i of the
    one-process order goes to rank i mod N, so a step's global batch is the same for any N)."""
    return items[rank() if seed_rank is None else seed_rank :: world()]


def reduce(values: list[float], op: str = "sum") -> list[float]:
    """`values` summed (or maxed) across ranks, in float64; themselves in a single process."""
    if not _group():
        return list(values)
    return _all_reduce(values, op).tolist()


def sum_on_device(values: list) -> list:
    """`values` (numbers or 0-d tensors) summed across ranks as 0-d float64 tensors on the
    collective's device, without the host waiting: numbers are filled in by a kernel (torch.full;
    torch.as_tensor of a number would be a blocking host-to-device copy), tensors are converted on
    their device, and NCCL runs the sum in stream order. Shares `reduce`'s collective (_all_reduce)."""
    return list(_all_reduce(values, "sum").unbind())


def _all_reduce(values: list, op: str):
    """`values` stacked as float64 on the collective's device (CUDA for NCCL, else the CPU) and
    all-reduced across ranks (`op`: "sum" or "max")."""
    import torch

    td = _group()
    device = "cuda" if td and td.get_backend() == "nccl" else "cpu"
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) if torch.is_tensor(v)
                     else torch.full((), float(v), dtype=torch.float64, device=device) for v in values])
    if td:
        td.all_reduce(t, op=td.ReduceOp.SUM if op == "sum" else td.ReduceOp.MAX)
    return t


def sum_across(value: float) -> float:
    return reduce([value])[0]


def max_across(values: dict[str, float]) -> dict[str, float]:
    """Each value maxed across ranks (peak memory: the fullest GPU)."""
    return dict(zip(values, reduce(list(values.values()), "max"), strict=True))


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    td = _group()
    if not td:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    td = _group()
    if td:
        td.barrier()


def _loss_module_class():
    import torch

    class LossForward(torch.nn.Module):
        """The model and its `loss_sum` as one module, so that DDP's (FSDP's) forward runs the whole
        loss: its reducer then sees every trained parameter, even when loss_sum calls the
        backbone and the LM head separately (training.sft.causal_lm_loss_sum)."""

        def __init__(self, model, loss_sum):
            super().__init__()
            self.model = model
            self.loss_sum = loss_sum

        def forward(self, batch):
            return self.loss_sum(self.model, batch)

    return LossForward


class Parallel:
    """A model wrapped for data parallelism: call it as `loss_sum(model, batch)` would be called."""

    def __init__(self, wrapped, strategy: str):
        self.wrapped, self.strategy = wrapped, strategy

    def __call__(self, batch):
        return self.wrapped(batch)

    def no_sync(self, skip: bool):
        """DDP: no gradient all-reduce for the accumulation micro-batches before the last one."""
        if skip and self.strategy == "ddp":
            return self.wrapped.no_sync()
        return contextlib.nullcontext()


def wrap(model, loss_sum, strategy: str = "ddp") -> Parallel | None:
    """The model (with its loss) under DDP or FSDP2 when several processes train; None in one."""
    if world() == 1:
        return None
    import torch

    module = _loss_module_class()(model, loss_sum)
    if strategy == "fsdp":
        return Parallel(fsdp2(module), "fsdp")
    cuda = torch.cuda.is_available()
    # gradient_as_bucket_view: the gradients live in DDP's buckets (no copy in and out of them)
    ddp = torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[torch.cuda.current_device()] if cuda else None, broadcast_buffers=False,
        gradient_as_bucket_view=True)
    return Parallel(ddp, "ddp")


def fsdp2(module):
    """FSDP2 (`fully_shard`) per decoder layer and at the root, gathering parameters in the frozen
    weights' dtype; gradients reduce in fp32."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    base = module.model.get_base_model() if hasattr(module.model, "get_base_model") else module.model
    dtype = base.get_input_embeddings().weight.dtype
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    layers = decoder_layers(base)
    if not layers:
        raise DataprepError(f"--fsdp: cannot find the layers of {type(base).__name__}; train it without --fsdp")
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(module, mp_policy=policy)
    return module


def full_state_dict(model) -> dict:
    """The whole (unsharded) state dict of an FSDP-sharded model, on the CPU; a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def decoder_layers(model) -> list:
    """The repeated layers of a (peft-wrapped) transformers model: `model.layers` (Llama, Qwen),
    `transformer.h` (GPT-2, Falcon), `encoder.layer` (BERT); none when it has none of these."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, getattr(base, "base_model_prefix", "model"), base)
    for attr in ("layers", "layer", "h"):
        found = getattr(inner, attr, None) or getattr(getattr(inner, "encoder", None), attr, None)
        if found is not None:
            return list(found)
    return []


def check_fsdp_quant(model_dtype, quant: str, quant_storage) -> None:
    """FSDP shards a 4-bit model's packed weights as tensors of their storage dtype; it must be a
    float dtype equal to the other weights' (accelerate#3983: with bitsandbytes' uint8 default the
    loss silently goes 0/NaN)."""
    import torch

    if quant != "4bit":
        return
    storage = getattr(torch, quant_storage) if isinstance(quant_storage, str) else quant_storage
    if storage is None or not storage.is_floating_point or storage != model_dtype:
        raise DataprepError(f"--fsdp with --quant 4bit needs bnb_4bit_quant_storage {str(model_dtype).split('.')[-1]} "
                            f"(the weights' dtype), not {str(storage).split('.')[-1]}; pass --bf16 yes, or train "
                            "without --fsdp")


def run_stage_on_main(run_stage_fn, build, **kwargs):
    """`run_stage` on rank 0, which alone writes the output (atomically, as every stage does); the
    other ranks run `build` alongside it in a throwaway workspace (its collectives need every rank)
    and return rank 0's manifest. When rank 0 finds the output current, nobody trains."""
    if world() == 1:
        return run_stage_fn(build=build, **kwargs)
    if is_main():
        started = []

        def build_main(ws):
            started.append(True)
            broadcast("build")
            return build(ws)

        try:
            manifest = run_stage_fn(build=build_main, **kwargs)
        except BaseException:
            if not started:
                broadcast("failed")
            raise
        if not started:
            broadcast("skipped")
        barrier()  # the output is in place (or was current) before any rank returns
        return broadcast(manifest)
    signal = broadcast(None)
    if signal == "failed":
        raise SystemExit(1)  # rank 0 printed the error
    if signal == "build":
        import tempfile
        from pathlib import Path

        from dataprep.stage import Timer, Workspace

        with tempfile.TemporaryDirectory(prefix="dataprep-rank-") as tmp:
            build(Workspace(Path(tmp), Path(tmp), Timer()))
    barrier()
    return broadcast(None)


def launch_command(gpus: int, argv: list[str]) -> list[str]:
    """`accelerate launch` of this very `dataprep train` on `gpus` processes of this machine."""
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "dataprep", *argv]


def check_gpus(gpus: int) -> None:
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > have:
        raise DataprepError(f"--gpus {gpus} but this machine has {have} GPU(s); pass --gpus {have} or less "
                            "(on CPUs, launch gloo processes with `torchrun --nproc-per-node N -m dataprep train ...`)"
                            if have else f"--gpus {gpus} but this machine has no GPU; drop --gpus (on CPUs, launch "
                            "with `torchrun --nproc-per-node N -m dataprep train ...`)")
