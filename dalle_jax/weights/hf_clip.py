"""Importing OpenAI's CLIP from a Hugging Face `transformers` snapshot, without PyTorch.

A snapshot directory holds `config.json` (a `CLIPConfig`), `model.safetensors` (read with the
`safetensors` NumPy API), the tokenizer (`tokenizer.json`, or `vocab.json` and `merges.txt`)
and optionally `preprocessor_config.json` (the pixel mean and std). `import_weights` writes
`WORKDIR/clip` as an imported run of the project's CLIP with `model.architecture = "openai"`,
which reranking, CLIP score, unCLIP's prior and decoder and the captioner then use.
"""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np

from dalle_jax.models.clip import OPENAI_PIXEL_MEAN, OPENAI_PIXEL_STD
from dalle_jax.tasks.clip import build_clip
from dalle_jax.text.clip_tokenizer import ClipTokenizer
from dalle_jax.train import trainer
from dalle_jax.weights.mapping import (Tensors, WeightsMismatchError, abstract_params, as_is, conv_kernel,
                                       dense_kernel, fill, read_json, read_safetensors, reshaped)

WEIGHTS = "model.safetensors"
# `transformers`' defaults for what a config.json leaves out (CLIPTextConfig, CLIPVisionConfig: ViT-B/32).
TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5, num_channels=3)
BUFFERS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
# `transformers`' activation names to this project's (`nn.transformer.ACTIVATIONS`): its "gelu" is the exact one.
HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu_erf"}
_LAYER_NORMS = {"scale": "weight", "bias": "bias"}
_BLOCK_PARTS = {"attention_norm": "layer_norm1", "mlp_norm": "layer_norm2", "Dense_0": "fc1", "Dense_1": "fc2"}


def _tower(hf_config: dict, name: str, defaults: dict) -> dict:
    section = {**defaults, **(hf_config.get(name) or {})}
    width, heads = section["hidden_size"], section["num_attention_heads"]
    if width % heads:
        raise ValueError(f"config.json {name}: hidden_size {width} is not a multiple of num_attention_heads {heads}")
    return section


def tower_sizes(section: dict) -> dict:
    """A `transformers` tower config's sizes as this project's tower settings."""
    return dict(embed_dim=section["hidden_size"], depth=section["num_hidden_layers"],
                num_heads=section["num_attention_heads"], head_dim=section["hidden_size"] // section["num_attention_heads"],
                mlp_dim=section["intermediate_size"])


def text_tower(config_file: pathlib.Path, section: dict) -> dict:
    """A `CLIPTextConfig` (its defaults filled in) checked for what this CLIP's text tower supports."""
    text = _tower({"text_config": section}, "text_config", TEXT_DEFAULTS)
    if text["hidden_act"] not in HF_ACTIVATIONS:
        raise ValueError(f"{config_file}: hidden_act {text['hidden_act']!r} is not one of {sorted(HF_ACTIVATIONS)}")
    return text


def vision_tower(config_file: pathlib.Path, section: dict) -> dict:
    """A `CLIPVisionConfig` (its defaults filled in) checked for what this CLIP's image tower supports."""
    vision = _tower({"vision_config": section}, "vision_config", VISION_DEFAULTS)
    if vision["hidden_act"] not in HF_ACTIVATIONS:
        raise ValueError(f"{config_file}: hidden_act {vision['hidden_act']!r} is not one of {sorted(HF_ACTIVATIONS)}")
    return vision


def model_settings(snapshot: pathlib.Path) -> tuple[dict, int, int]:
    """(`config.model` of the snapshot's CLIP, its text length, its text vocabulary size)."""
    config_file = snapshot / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: --source is a transformers CLIP snapshot directory "
                                f"(config.json, {WEIGHTS}, tokenizer files)")
    hf_config = read_json(config_file)
    if hf_config.get("model_type", "clip") != "clip":
        raise ValueError(f"{config_file}: model_type is {hf_config['model_type']!r}, not 'clip'")
    text = text_tower(config_file, hf_config.get("text_config") or {})
    vision = _tower(hf_config, "vision_config", VISION_DEFAULTS)
    for key in ("hidden_act", "layer_norm_eps"):
        if text[key] != vision[key]:
            raise ValueError(f"{config_file}: the towers differ in {key} ({text[key]!r}, {vision[key]!r}), which "
                             "this CLIP does not support")
    preprocessor_file = snapshot / "preprocessor_config.json"
    preprocessor = read_json(preprocessor_file) if preprocessor_file.is_file() else {}
    model = dict(architecture="openai", projection_dim=hf_config.get("projection_dim", 512), dtype="float32",
                 patch_size=vision["patch_size"], image_size=vision["image_size"], pooling="cls",
                 activation=HF_ACTIVATIONS[text["hidden_act"]], norm_eps=text["layer_norm_eps"],
                 pixel_mean=tuple(preprocessor.get("image_mean", OPENAI_PIXEL_MEAN)),
                 pixel_std=tuple(preprocessor.get("image_std", OPENAI_PIXEL_STD)),
                 text_tower=tower_sizes(text), vision_tower=tower_sizes(vision))
    return model, text["max_position_embeddings"], text["vocab_size"]


def read_tensors(snapshot: pathlib.Path) -> Tensors:
    """The snapshot's `model.safetensors`, each tensor read as it is looked up."""
    return read_safetensors(snapshot, (WEIGHTS,))[1]


def hf_name(path: tuple[str, ...]):
    """The `transformers` tensor name of a Flax parameter of the OpenAI-architecture CLIP, and
    how to lay it out."""
    top, *rest = path
    if top == "logit_scale":
        return "logit_scale", reshaped
    if top in ("image_projection", "text_projection"):
        return ("visual_projection" if top == "image_projection" else "text_projection") + ".weight", dense_kernel
    tower = {"text": "text_model", "vision": "vision_model"}[top]
    simple = {("Embed_0", "embedding"): ("embeddings.token_embedding.weight", as_is),
              ("position",): ("embeddings.position_embedding.weight", as_is),
              ("cls",): ("embeddings.class_embedding", reshaped),
              ("patch_embed", "kernel"): ("embeddings.patch_embedding.weight", conv_kernel)}
    if tuple(rest) in simple:
        name, transform = simple[tuple(rest)]
        return f"{tower}.{name}", transform
    if rest[0] == "pre_norm":
        return f"{tower}.pre_layrnorm.{_LAYER_NORMS[rest[1]]}", as_is  # sic: transformers' spelling
    _stack, block, *inner = rest  # TransformerStack_0, block_i, ...
    if block == "final_norm":
        norm = "final_layer_norm" if top == "text" else "post_layernorm"
        return f"{tower}.{norm}.{_LAYER_NORMS[inner[0]]}", as_is
    prefix = f"{tower}.encoder.layers.{int(block.removeprefix('block_'))}"
    if inner[0] == "attention":
        projection, _, is_bias = inner[1].partition("_")
        hf = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}[projection]
        return f"{prefix}.self_attn.{hf}.{'bias' if is_bias else 'weight'}", reshaped if is_bias else dense_kernel
    if inner[0] == "mlp":
        _, dense, leaf = inner
        return f"{prefix}.mlp.{_BLOCK_PARTS[dense]}.{'weight' if leaf == 'kernel' else 'bias'}", (
            dense_kernel if leaf == "kernel" else as_is)
    return f"{prefix}.{_BLOCK_PARTS[inner[0]]}.{_LAYER_NORMS[inner[1]]}", as_is


def clip_run_config(config: ml_collections.ConfigDict, model: dict, length: int,
                    vocab_size: int) -> ml_collections.ConfigDict:
    """`config` (its data, mesh and sharding) as the imported CLIP's run config."""
    run_config = ml_collections.ConfigDict(config.to_dict())
    run_config.task = "clip"
    run_config.model = model
    run_config.text.max_length = length
    run_config.text.vocab_size = vocab_size  # the embedding table's rows, which the tokenizer may not all use
    return run_config


def import_weights(source: str | pathlib.Path, workdir: str | pathlib.Path,
                   config: ml_collections.ConfigDict) -> dict:
    """Converts the snapshot in `source` into `WORKDIR/clip` (with its tokenizer files). Returns
    the CLIP's `config.model`."""
    snapshot = pathlib.Path(source)
    model, length, vocab_size = model_settings(snapshot)
    tokenizer = ClipTokenizer.load(snapshot)
    if tokenizer.vocab_size > vocab_size:
        raise WeightsMismatchError(f"the tokenizer in {snapshot} has {tokenizer.vocab_size} tokens, more than the "
                                   f"{vocab_size} of config.json's text_config.vocab_size")
    run_config = clip_run_config(config, model, length, vocab_size)
    size = model["image_size"]
    example = {"image": np.zeros((size, size, 3), np.uint8), "text": np.zeros((length,), np.int32)}
    abstract = abstract_params(build_clip(run_config, tokenizer), jnp.asarray(example["image"][None]), jnp.asarray(example["text"][None]))
    params = fill(abstract, read_tensors(snapshot), hf_name, origin=str(snapshot / WEIGHTS), ignored=BUFFERS)
    trainer.write_imported_run(pathlib.Path(workdir) / "clip", run_config, example, {"params": params},
                               extra_files=lambda directory: ClipTokenizer.copy_files(snapshot, directory))
    return model
