"""Keep the checkpointed decoder layers' inputs in host memory between the forward and the backward.

Under gradient checkpointing what stays on the GPU from the forward to the backward is each
decoder layer's input hidden states (tokens x hidden, bf16: 0.5 GB on a 1B at 8,192 tokens, 2 GB
on an 8B), all of them alive when the backward starts. `Offloader.around(model)` copies them to
pinned host memory as the forward saves them, on a side CUDA stream, and brings them back as the
backward needs them, fetching the next one (the layer below) while the current one is used.
unsloth's "unsloth" gradient checkpointing moves the same tensors.

Which tensors: those saved while a checkpointed decoder layer is called, that require gradients
and are not parameters. The hooks (torch.autograd.graph.saved_tensors_hooks) are installed
just outside the checkpoint, never inside it (there they would replace the checkpoint's own hooks:
everything saved, nothing recomputed): where transformers calls the checkpoint from the layer's
`__call__` (5.17), around the layer's `_gradient_checkpointing_func`; where it checkpoints
`forward` (5.24), around the layer's call, where a torch.compile'd layer is entered (its
`_compiled_call_impl`), so they are never traced. Eager, non-reentrant torch.utils.checkpoint
saves the layer's inputs (`_CheckpointFrame.save_inputs`) under these hooks and pushes its own for
everything inside; compiled, the checkpoint is traced into the layer's graph and the saved
tensors are that graph's: the input hidden states (the one that requires gradients), parameters,
RoPE cos/sin and masks (which do not). The final norm and the loss, outside the layers, are not
touched. Layers without gradient checkpointing are left alone (everything they save would move).

GPU memory: the D2H copy reads the layer input on the side stream after the compute stream got
there (wait_stream), and `record_stream` keeps its block from reuse until that copy is done; the
H2D copy writes into a block allocated on the compute stream (the side stream first waits for the
compute stream), and the compute stream waits for the copy's event before the backward reads it (and for the
whole side stream when the micro-batch ends, should it have raised before reading a fetched copy).
Host memory: torch's caching host allocator hands out the pinned buffers, so after the first step
they are reused rather than allocated (cudaHostAlloc) again; they return to it when the
micro-batch's backward is done, and it keeps them: layers x tokens x hidden x 2 bytes (bf16) per
process, 2.1 GB for an 8B at 8,192 tokens a micro-batch, 17 GB at 64k. Where pinning fails, the
tensor stays on the GPU (one warning, counted in `kept_on_gpu`) rather than the step failing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MIN_BYTES = 1 << 20  # smaller saved tensors stay on the device: not worth a PCIe round trip
MOVES = "cuda"  # the device whose tensors are offloaded; tests set "cpu" to round-trip CPU tensors


@dataclass(eq=False)
class _Offloaded:
    """One saved tensor in host memory; `device_copy` (and `ready`, its copy's CUDA event) once fetched back."""

    host: Any
    device: Any
    index: int
    device_copy: Any = None
    ready: Any = None
    unpacked: bool = False


@dataclass(eq=False)
class Offloader:
    """saved_tensors_hooks that move the checkpointed layers' inputs to host memory (module doc).
    `moved`, `moved_bytes`: what the last micro-batch moved; `kept_on_gpu`: the tensors of the
    whole run left on the device because no pinned host memory could be had."""

    device_type: str = field(default_factory=lambda: MOVES)
    min_bytes: int = field(default_factory=lambda: MIN_BYTES)
    moved: int = 0
    moved_bytes: int = 0
    kept_on_gpu: int = 0
    pending: list[_Offloaded] = field(default_factory=list)  # this micro-batch's, in the forward's order
    _stream: Any = None

    @contextlib.contextmanager
    def around(self, model) -> Iterator[Offloader]:
        """One micro-batch's forward and backward, with the checkpointed decoder layers of `model`
        offloading their inputs; the layers are as before afterwards and nothing is kept."""
        import torch

        from training.dist import decoder_layers

        layers = [layer for layer in decoder_layers(model) if getattr(layer, "gradient_checkpointing", False)]
        hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        # the hooks go around the checkpoint call, outside it: inside, they would replace the
        # checkpoint's own hooks and keep every saved tensor (no recompute, all activations kept)
        wrapped = [_CHECKPOINT_FUNC if _checkpoints_in_call(layer) else _COMPILED_CALL for layer in layers]
        before = [layer.__dict__.get(attr) for layer, attr in zip(layers, wrapped, strict=True)]
        for layer, attr in zip(layers, wrapped, strict=True):
            call = getattr(layer, attr) if attr == _CHECKPOINT_FUNC else layer._compiled_call_impl or layer._call_impl
            setattr(layer, attr, _with_hooks(hooks, call))
        self.moved = self.moved_bytes = 0
        try:
            yield self
        finally:
            for layer, attr, call in zip(layers, wrapped, before, strict=True):
                if call is None:
                    delattr(layer, attr)  # back to the class's attribute (None: not compiled)
                else:
                    setattr(layer, attr, call)
            if self._stream is not None:
                # a micro-batch that raised may leave fetched copies not yet unpacked (their compute-
                # stream wait never queued): their blocks are the compute stream's, so they could be
                # reused while the side stream still writes them. Ordering the compute stream after
                # the side stream before dropping them covers that at no cost to a normal step
                # (which waited on each copy already); record_stream on each copy would instead hold
                # every fetched block until the side stream's later copies are done too.
                torch.cuda.current_stream(self._stream.device).wait_stream(self._stream)
            self.pending.clear()

    def pack(self, tensor):
        import torch

        if (tensor.device.type != self.device_type or not tensor.requires_grad or isinstance(tensor, torch.nn.Parameter)
                or not tensor.is_contiguous() or tensor.numel() * tensor.element_size() < self.min_bytes):
            return tensor
        try:
            host = _host_buffer(tensor)
        except RuntimeError as e:  # pinned memory ran out (cudaHostAlloc): this one stays on the device
            if not self.kept_on_gpu:
                print(f"warning: --offload-checkpoints: no pinned host memory ({str(e).splitlines()[0]}); such "
                      "layer inputs stay on the GPU (metrics.json: offload_kept_on_gpu)", file=sys.stderr)
            self.kept_on_gpu += 1
            return tensor
        if tensor.device.type == "cuda":
            stream = self.stream()
            stream.wait_stream(torch.cuda.current_stream(tensor.device))  # the tensor is computed
            with torch.cuda.stream(stream):
                host.copy_(tensor, non_blocking=True)
            tensor.record_stream(stream)  # its block is not reused before the copy is done
        else:  # forced (tests): a real round trip through another buffer
            host.copy_(tensor.detach())
        saved = _Offloaded(host, tensor.device, len(self.pending))
        self.pending.append(saved)
        self.moved += 1
        self.moved_bytes += tensor.numel() * tensor.element_size()
        return saved

    def metrics(self) -> dict:
        """For metrics.json: the last micro-batch's offloaded bytes, the run's tensors kept on the GPU."""
        return {"offloaded_bytes": self.moved_bytes, "offload_kept_on_gpu": self.kept_on_gpu}

    def unpack(self, saved):
        if not isinstance(saved, _Offloaded):
            return saved
        self.fetch(saved)
        if saved.index > 0 and saved.index - 1 < len(self.pending):  # the layer below comes next in the backward
            below = self.pending[saved.index - 1]
            if not below.unpacked:
                self.fetch(below)
        tensor, saved.device_copy, saved.unpacked = saved.device_copy, None, True
        if saved.ready is not None:
            import torch

            torch.cuda.current_stream(saved.device).wait_event(saved.ready)
        return tensor

    def fetch(self, saved: _Offloaded) -> None:
        """Start copying `saved` back to its device (once)."""
        import torch

        if saved.device_copy is not None:
            return
        if saved.device.type != "cuda":
            saved.device_copy = saved.host.clone()
            return
        compute = torch.cuda.current_stream(saved.device)
        saved.device_copy = torch.empty(saved.host.shape, dtype=saved.host.dtype, device=saved.device)  # compute stream's
        stream = self.stream()
        stream.wait_stream(compute)  # the block's earlier users on the compute stream are done
        with torch.cuda.stream(stream):
            saved.device_copy.copy_(saved.host, non_blocking=True)
            saved.ready = stream.record_event()

    def stream(self):
        import torch

        if self._stream is None:
            self._stream = torch.cuda.Stream()
        return self._stream


_CHECKPOINT_FUNC, _COMPILED_CALL = "_gradient_checkpointing_func", "_compiled_call_impl"


def _host_buffer(tensor):
    """Host memory for `tensor`'s copy: pinned for a CUDA tensor (torch's caching host allocator),
    plain for the CPU tensors tests move. RuntimeError when it cannot be had."""
    import torch

    return torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.device.type == "cuda")


def _checkpoints_in_call(layer) -> bool:
    """Whether the layer's class runs the checkpoint in its own `__call__`, around nn.Module's call
    and so outside a compiled `_call_impl` (GradientCheckpointingLayer in transformers 5.17, the GPU
    image's); 5.24 checkpoints `forward`, inside `_call_impl`."""
    import torch

    return type(layer).__call__ is not torch.nn.Module.__call__ and hasattr(layer, _CHECKPOINT_FUNC)


def _with_hooks(hooks, call):
    def call_with_hooks(*args, **kwargs):
        with hooks:
            return call(*args, **kwargs)

    return call_with_hooks

