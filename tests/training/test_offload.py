"""Offloading the checkpointed layers' inputs (training.offload), forced onto CPU tensors here:
the same losses and gradients as without it, exactly the layer inputs moved, nothing kept after a
step, and nothing installed unless --offload-checkpoints asks."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import weakref

import pytest
import torch

from tests.train_helpers import preference_rows, tiny_sft_run, tiny_tokenizer, write_shards
from training.data import collate_flat
from training.offload import Offloader, _Offloaded

HIDDEN, LAYERS = 64, 2  # tiny_causal_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("offload")
    return {**tiny_sft_run(d), "pairs": write_shards(d / "pairs", preference_rows(24), "preference", tiny_tokenizer())}


def _lora_model(tiny, checkpointing=True):
    from training.sft import SFTConfig, add_lora, load_model

    torch.manual_seed(0)
    model = add_lora(load_model(str(tiny["model"]), "none", False, "sdpa", checkpointing),
                     SFTConfig(lora_r=4, lora_dropout=0.0))
    model.train()
    return model


def _batches(tiny):
    from training.sft import with_target_index

    rows = tiny["rows"]
    return [with_target_index(collate_flat(rows[i:i + 6])) for i in (0, 6, 12, 18)]


def _steps(tiny, offload, checkpointing=True, compiled=False, prepare=lambda model: None):
    """Two train_steps of two micro-batches each (AdamW): their losses and the LoRA gradients before
    each update. `prepare(model)` runs on the model first."""
    from transformers import get_scheduler

    from training.dist import decoder_layers
    from training.loop import train_step
    from training.sft import causal_lm_loss_sum

    model = _lora_model(tiny, checkpointing)
    prepare(model)
    for layer in decoder_layers(model) if compiled else []:
        layer.compile()  # as training.sft.compile_layers, without moving the compile cache
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    grads = []
    optimizer.register_step_pre_hook(lambda *_: grads.append(
        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    scheduler = get_scheduler("constant", optimizer)
    batches = _batches(tiny)
    losses = [train_step(model, batches[i:i + 2], causal_lm_loss_sum, optimizer, scheduler, offload=offload).loss
              for i in (0, 2)]
    return model, losses, grads


def _on_move(offload: Offloader, call) -> None:
    """Have `offload` call `call(saved)` for each tensor it moves."""
    pack = offload.pack

    def recording(tensor):
        saved = pack(tensor)
        if saved is not tensor:
            call(saved)
        return saved

    offload.pack = recording


def test_offloaded_steps_give_exactly_the_losses_and_gradients_without_offload(tiny):
    offload = Offloader("cpu", 0)
    _, losses, grads = _steps(tiny, offload)
    assert offload.moved == LAYERS  # it engaged (else the equality below would say nothing)
    _, plain_losses, plain_grads = _steps(tiny, None)
    assert losses == plain_losses
    assert len(grads) == len(plain_grads) == 2
    for got, want in zip(grads, plain_grads, strict=True):
        assert got.keys() == want.keys() and len(got) == 2 * 7 * LAYERS  # lora_A and lora_B of 7 linears per layer
        for name, g in want.items():
            assert torch.equal(got[name], g), name


@pytest.mark.slow
def test_compiled_layers_offload_their_input_with_the_same_result_and_no_recompile(tiny):
    """torch.compile'd layers (the CUDA default) trace the checkpoint into their graph: the hooks,
    installed outside it, see that graph's saved tensors, of which only the layer input moves,
    and the compiled graphs are not traced again for them."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    offload = Offloader("cpu", 0)
    _, losses, grads = _steps(tiny, offload, compiled=True)
    graphs = counters["stats"]["unique_graphs"]
    _, plain_losses, plain_grads = _steps(tiny, None, compiled=True)
    assert offload.moved == LAYERS
    assert offload.moved_bytes == LAYERS * _batches(tiny)[3]["input_ids"].shape[1] * HIDDEN * 4
    assert losses == plain_losses
    for got, want in zip(grads, plain_grads, strict=True):
        assert got.keys() == want.keys() and all(torch.equal(got[n], g) for n, g in want.items())
    assert graphs > 0 and counters["stats"]["unique_graphs"] == graphs  # the second model reuses the graphs


def test_what_moves_is_exactly_each_checkpointed_layer_input(tiny):
    """One tensor per decoder layer, its input hidden states (tokens x hidden, fp32 here), and
    nothing else: not the final norm's, the loss's, the parameters or RoPE's."""
    from training.dist import decoder_layers
    from training.sft import causal_lm_loss_sum

    model = _lora_model(tiny)
    batch = _batches(tiny)[0]
    tokens = batch["input_ids"].shape[1]
    inputs = []
    for layer in decoder_layers(model):
        layer.register_forward_pre_hook(lambda _, args: inputs.append(args[0].detach().clone()))
    offload = Offloader("cpu", 0)
    moved = []
    _on_move(offload, lambda saved: moved.append(saved.host.clone()))
    with offload.around(model):
        loss, _ = causal_lm_loss_sum(model, batch)
        loss.backward()
    assert offload.moved == len(moved) == LAYERS
    assert offload.moved_bytes == LAYERS * tokens * HIDDEN * 4
    assert all(torch.equal(m, x) for m, x in zip(moved, inputs, strict=True))


def test_without_pinned_memory_the_inputs_stay_on_the_device_with_one_warning(tiny, monkeypatch, capsys):
    """A failed pinned allocation keeps that tensor where it is (counted, warned once), and the
    step goes on with the same losses and gradients."""
    from training import offload as offload_module

    def no_pinned_memory(tensor):
        raise RuntimeError("CUDA error: out of memory\nmore lines")

    monkeypatch.setattr(offload_module, "_host_buffer", no_pinned_memory)
    offload = Offloader("cpu", 0)
    _, losses, grads = _steps(tiny, offload)
    _, plain_losses, plain_grads = _steps(tiny, None)
    assert offload.moved == 0 and offload.kept_on_gpu == 2 * 2 * LAYERS  # 2 steps of 2 micro-batches
    assert offload.metrics() == {"offloaded_bytes": 0, "offload_kept_on_gpu": 2 * 2 * LAYERS}
    assert losses == plain_losses
    for got, want in zip(grads, plain_grads, strict=True):
        assert got.keys() == want.keys() and all(torch.equal(got[n], g) for n, g in want.items())
    warned = [line for line in capsys.readouterr().err.splitlines() if "pinned" in line]
    assert warned == ["warning: --offload-checkpoints: no pinned host memory (CUDA error: out of memory); such layer "
                      "inputs stay on the GPU (metrics.json: offload_kept_on_gpu)"]


def test_layers_without_checkpointing_are_left_alone(tiny):
    offload = Offloader("cpu", 0)
    _steps(tiny, offload, checkpointing=False)
    assert offload.moved == 0


def test_nothing_is_kept_after_a_step(tiny):
    """The offloaded copies die with the step's graph; the layers and the hooks are as before."""
    from training.dist import decoder_layers

    offload = Offloader("cpu", 0)
    kept = []
    _on_move(offload, lambda saved: kept.append(weakref.ref(saved.host)))
    model, _, _ = _steps(tiny, offload)
    gc.collect()
    assert len(kept) == 2 * 2 * LAYERS  # 2 steps of 2 micro-batches
    assert all(ref() is None for ref in kept)
    assert offload.pending == []
    checkpoint = model.get_base_model().model._gradient_checkpointing_func  # the backbone's: `around` leaves it
    for layer in decoder_layers(model):  # whichever attribute `around` wrapped (see _wrapped), it is put back
        assert "_compiled_call_impl" not in layer.__dict__
        assert layer.__dict__["_gradient_checkpointing_func"] is checkpoint
    assert torch._C._autograd._top_saved_tensors_default_hooks(True) is None


def _wrapped(layer) -> str:
    """The attribute `around` wraps on this transformers: the checkpoint function where the layer's
    `__call__` runs the checkpoint (<= 5.23), else the compiled call."""
    from training.offload import _checkpoints_in_call

    return "_gradient_checkpointing_func" if _checkpoints_in_call(layer) else "_compiled_call_impl"


@pytest.mark.parametrize("in_call", [None, True], ids=["this_transformers", "checkpoint_in_call"])
def test_compiled_layers_stay_compiled_after_the_step(tiny, monkeypatch, in_call):
    """Whichever attribute `around` wraps (this transformers', or forced: 5.17's), both are put back."""
    from training import offload
    from training.dist import decoder_layers

    if in_call:
        monkeypatch.setattr(offload, "_checkpoints_in_call", lambda layer: True)
    model = _lora_model(tiny)
    layers = decoder_layers(model)
    for layer in layers:
        layer._compiled_call_impl = object()  # a stand-in: `around` must only put it back
    attrs = ("_compiled_call_impl", "_gradient_checkpointing_func")
    before = [{a: layer.__dict__.get(a) for a in attrs} for layer in layers]
    with Offloader("cpu", 0).around(model):
        assert all(getattr(layer, _wrapped(layer)) is not was[_wrapped(layer)]
                   for layer, was in zip(layers, before, strict=True))
    assert [{a: layer.__dict__.get(a) for a in attrs} for layer in layers] == before
    assert all(was["_gradient_checkpointing_func"] is not None for was in before)  # both were there to restore


def test_the_option_installs_an_offloader_on_cuda_or_when_asked_with_checkpointing(monkeypatch):
    from training import sft
    from training.sft import SFTConfig, checkpoint_offloader

    monkeypatch.setattr(sft, "device", lambda: "cpu")
    assert checkpoint_offloader(SFTConfig()) is None  # auto on the CPU
    assert checkpoint_offloader(SFTConfig(offload_checkpoints="no")) is None
    assert checkpoint_offloader(SFTConfig(offload_checkpoints="yes", gradient_checkpointing=False)) is None
    offload = checkpoint_offloader(SFTConfig(offload_checkpoints="yes"))
    assert isinstance(offload, Offloader) and offload.device_type == "cuda"  # on CPU tensors: a no-op
    monkeypatch.setattr(sft, "device", lambda: "cuda")
    assert isinstance(checkpoint_offloader(SFTConfig()), Offloader)  # auto on CUDA
    assert checkpoint_offloader(SFTConfig(fsdp=True)) is None  # but not under FSDP
    assert checkpoint_offloader(SFTConfig(offload_checkpoints="no")) is None


@pytest.mark.parametrize("task", ["sft", "dpo"])
def test_train_runs_offload_only_when_asked(tiny, tmp_path, monkeypatch, task):
    """train_sft and train_preference (dpo, kto) hand the step an Offloader for
    --offload-checkpoints yes only; forced onto CPU tensors, it moves the layer inputs and the
    run learns as usual."""
    from training import offload as offload_module
    from training.dpo import DPOConfig, train_dpo
    from training.sft import SFTConfig, train_sft

    monkeypatch.setattr(offload_module, "MOVES", "cpu")
    monkeypatch.setattr(offload_module, "MIN_BYTES", 0)
    moved = []
    pack = Offloader.pack

    def recording(self, tensor):
        saved = pack(self, tensor)
        moved.append(saved is not tensor)
        return saved

    monkeypatch.setattr(Offloader, "pack", recording)
    for option in ("auto", "yes"):
        moved.clear()
        out = tmp_path / option
        kw = dict(model=str(tiny["model"]), quant="none", max_steps=2, report_to="none", lora_dropout=0.0,
                  offload_checkpoints=option)
        if task == "sft":
            train_sft(str(tiny["packed"]), str(out), SFTConfig(micro_batch=4, **kw))
        else:
            train_dpo(str(tiny["pairs"]), str(out), DPOConfig(micro_batch=4, **kw))
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["steps"] == 2
        assert moved.count(True) == (2 * LAYERS if option == "yes" else 0), option
        # what the last micro-batch moved, for the GPU benchmark to show (DPO, KTO: train_preference's)
        assert (metrics.get("offloaded_bytes", 0) > 0) is (option == "yes")
        assert metrics.get("offload_kept_on_gpu") == (0 if option == "yes" else None)


def _gpt2(checkpointing: bool):
    """A tiny GPT-2 (its layers are `transformer.h`), without dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=46, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=64,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def test_gpt2_style_layers_are_found_and_offloaded():
    """training.dist.decoder_layers finds `transformer.h` too (GPT-2, Falcon), so their
    checkpointed inputs move, with the gradients of a run without offload; none for a model
    without layers."""
    from training.dist import decoder_layers

    model, plain = _gpt2(True), _gpt2(True)
    assert decoder_layers(model) == list(model.transformer.h) and len(model.transformer.h) == LAYERS
    assert decoder_layers(torch.nn.Linear(2, 2)) == []
    ids = torch.randint(0, 46, (2, 32))
    offload = Offloader("cpu", 0)
    with offload.around(model):
        model(input_ids=ids, labels=ids).loss.backward()
    plain(input_ids=ids, labels=ids).loss.backward()
    assert offload.moved == LAYERS
    for got, want in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(got.grad, want.grad)


class _CallCheckpointingLayer(torch.nn.Module):
    """transformers 5.17's protocol (the GPU image's): `__call__` runs the checkpoint around nn.Module's call."""

    gradient_checkpointing = True

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.calls = torch.nn.Linear(HIDDEN, HIDDEN), 0
        self._gradient_checkpointing_func = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)

    def __call__(self, *args, **kwargs):
        if self.gradient_checkpointing and self.training:
            return self._gradient_checkpointing_func(functools.partial(super().__call__, **kwargs), *args)
        return super().__call__(*args, **kwargs)

    def forward(self, x):
        self.calls += 1
        return torch.tanh(self.lin(x)) + x


class _CallCheckpointingModel(torch.nn.Module):
    base_model_prefix = "model"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([_CallCheckpointingLayer() for _ in range(LAYERS)])

    def forward(self, x):
        for layer in self.model.layers:
            x = layer(x)
        return x.square().sum()


@pytest.mark.parametrize("offload", [True, False])
def test_checkpoint_called_from_the_layers_call_still_recomputes(offload):
    """Where the checkpoint runs in the layer's `__call__`, the hooks go around it, not inside:
    each layer still runs twice (forward and recompute) and only its input moves; inside, they
    would have kept everything the layer saved and recomputed nothing."""
    model = _CallCheckpointingModel()
    x = torch.randn(32, HIDDEN, requires_grad=True)
    offloader = Offloader("cpu", 0)
    with offloader.around(model) if offload else contextlib.nullcontext():
        model(x).backward()
    assert [layer.calls for layer in model.model.layers] == [2] * LAYERS
    assert offloader.moved == (LAYERS if offload else 0)
    assert all("_gradient_checkpointing_func" in layer.__dict__ for layer in model.model.layers)  # put back
    plain = _CallCheckpointingModel()
    xp = x.detach().requires_grad_()
    plain(xp).backward()
    assert torch.equal(x.grad, xp.grad)
    for got, want in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(got.grad, want.grad)


# On a GPU (skipped without one): the real side stream, pinned host memory and CUDA copies. The
# attention runs on SDPA's math kernel, whose backward is deterministic, so "exactly" can hold.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA streams need a GPU")
SLEEP_CYCLES = 200_000_000  # about 0.1 s of an H200's clock: far longer than any copy or compute here


def _slow_side_stream(offload: Offloader, when=lambda: True) -> None:
    """Queue a long GPU sleep on `offload`'s side stream before each copy it issues (when `when()`),
    so the copies finish long after the compute stream got past them: a missing wait or
    record_stream would then read unfinished copies or overwrite tensors still being copied."""
    stream = offload.stream

    def slow():
        side = stream()
        if when():
            with torch.cuda.stream(side):
                torch.cuda._sleep(SLEEP_CYCLES)
        return side

    offload.stream = slow


def _slow_layer_outputs(model) -> None:
    """Queue a long GPU sleep on the compute stream before each decoder layer's last matmul, so the
    next layer's input is not computed yet when the offloader copies it out: a side stream that did
    not wait for the compute stream would copy a stale block."""
    from training.dist import decoder_layers

    for layer in decoder_layers(model):
        layer.mlp.down_proj.register_forward_pre_hook(lambda *_: torch.cuda._sleep(SLEEP_CYCLES))


@needs_cuda
@pytest.mark.parametrize("slow", ["none", "side", "compute"],
                         ids=["plain", "slow_side_stream", "slow_compute_stream"])
def test_cuda_offloaded_steps_give_exactly_the_losses_and_gradients_without_offload(tiny, slow):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    offload = Offloader("cuda", 0)
    if slow == "side":
        _slow_side_stream(offload)
    with sdpa_kernel(SDPBackend.MATH):
        _, losses, grads = _steps(tiny, offload, prepare=_slow_layer_outputs if slow == "compute" else lambda m: None)
        _, plain_losses, plain_grads = _steps(tiny, None)
    assert offload.moved == LAYERS and offload.pending == []
    assert losses == plain_losses
    assert len(grads) == len(plain_grads) == 2
    for got, want in zip(grads, plain_grads, strict=True):
        assert got.keys() == want.keys() and len(got) == 2 * 7 * LAYERS
        for name, g in want.items():
            assert g.is_cuda and torch.equal(got[name], g), name


def _backward_raising_after_a_prefetch(model, batch, offload: Offloader) -> tuple:
    """A micro-batch whose backward raises right after the top layer's input is unpacked, while the
    layer below's (prefetched) copy is still being written; that copy's address, shape and dtype."""
    from training.sft import causal_lm_loss_sum

    unpack, prefetched = offload.unpack, []

    def raising(saved):
        tensor = unpack(saved)
        if not isinstance(saved, _Offloaded):  # a saved tensor that stayed (RoPE's, the mask)
            return tensor
        assert saved.index == LAYERS - 1  # the backward starts at the top layer, fetching the one below
        below = offload.pending[saved.index - 1]
        prefetched.append((below.device_copy.data_ptr(), below.device_copy.shape, below.device_copy.dtype))
        raise RuntimeError("backward aborted")

    offload.unpack = raising
    try:
        with offload.around(model):
            loss, _ = causal_lm_loss_sum(model, batch)
            loss.backward()
    except RuntimeError as e:
        assert "backward aborted" in str(e)
    assert offload.pending == [] and len(prefetched) == 1
    return prefetched[0]  # the graph (and the copy) died with `loss` above


@needs_cuda
def test_cuda_a_raising_backward_does_not_free_a_copy_still_being_written(tiny):
    """The prefetched copy's block, freed when the aborted micro-batch's graph dies, may be handed
    out again on the compute stream at once; what the compute stream writes there must come after
    the side stream's (slow) copy into it, not be overwritten by it."""
    from training.loop import to_device

    model = _lora_model(tiny)
    batch = to_device(_batches(tiny)[0])
    offload = Offloader("cuda", 0)
    backward = []
    unpack = offload.unpack
    offload.unpack = lambda saved: backward.append(True) or unpack(saved)
    _slow_side_stream(offload, when=lambda: bool(backward))  # only the backward's fetches are slow
    _backward_raising_after_a_prefetch(model, batch, offload)
    # the freed block may be handed out on the compute stream at once (the caching allocator does not
    # promise which block comes back): whatever runs there next must come after the side stream's copy
    after = torch.cuda.current_stream().record_event()
    after.synchronize()
    assert offload._stream.query(), "the compute stream went on before the side stream's copy was done"
