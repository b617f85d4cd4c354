"""Kakao Brain's Karlo unCLIP (v1 alpha) from its diffusers snapshot, without PyTorch.

A snapshot is a directory with `model_index.json` and one directory per component: `prior`
(diffusers' PriorTransformer), `text_proj` (UnCLIPTextProjModel), `decoder`
(UNet2DConditionModel), `super_res_first` and `super_res_last` (UNet2DModel), `text_encoder`
(transformers' CLIPTextModelWithProjection, OpenAI's ViT-L/14 text tower), `tokenizer`, and
`prior_scheduler`, `decoder_scheduler`, `super_res_scheduler` (UnCLIPScheduler). Each model's
`config.json` becomes the matching module of this project, its safetensors (read with the NumPy
API) its parameters, by the rules below; a scheduler's `scheduler_config.json` becomes how its
stage samples (`StageSchedule`). Components load one at a time, each in the dtype asked for.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np

from dalle_jax.models import clip
from dalle_jax.models.decoder import KarloDecoder, Upsampler
from dalle_jax.models.prior import DiffusionPrior
from dalle_jax.nn.unet import UNet
from dalle_jax.text.clip_tokenizer import ClipTokenizer
from dalle_jax.weights import hf_clip
from dalle_jax.weights.mapping import (Tensors, abstract_params, as_is, conv_kernel, dense_kernel, fill, read_json,
                                       read_safetensors, reshaped)

# A component's weights: diffusers' and transformers' file names, full precision first, then the fp16 variant.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "model.fp16.safetensors")
PICKLES = ("diffusion_pytorch_model.bin", "pytorch_model.bin")  # older snapshots: read with PyTorch, if present
_LAYER_NORMS = {"scale": "weight", "bias": "bias"}
_DENSE = {"kernel": ("weight", dense_kernel), "bias": ("bias", as_is)}


def component_config(snapshot: pathlib.Path, name: str, filename: str = "config.json") -> tuple[pathlib.Path, dict]:
    """(path, contents) of a component's config file; the error says what a snapshot holds."""
    path = pathlib.Path(snapshot) / name / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a Karlo snapshot (diffusers layout) has model_index.json and "
                                f"the directories prior, text_proj, decoder, super_res_first, super_res_last, "
                                f"text_encoder, tokenizer and the three *_scheduler")
    return path, read_json(path)


def read_weights(directory: pathlib.Path) -> tuple[pathlib.Path, Tensors]:
    """(file, tensors) of a component: its safetensors (NumPy API), or else its PyTorch pickle,
    which needs PyTorch (`pip install -e '.[convert]'`; read with `weights_only`, no code runs)."""
    try:
        return read_safetensors(directory, WEIGHT_FILES)
    except FileNotFoundError:
        pickle = next((directory / name for name in PICKLES if (directory / name).is_file()), None)
        if pickle is None:
            raise
    try:
        import torch
    except ImportError:
        raise FileNotFoundError(f"{directory} has only {pickle.name}, a PyTorch pickle: reading it needs PyTorch "
                                f"(pip install -e '.[convert]'), or fetch the snapshot's safetensors files") from None
    state = torch.load(pickle, map_location="cpu", weights_only=True)
    return pickle, Tensors.of(state, lambda tensor: tensor.float().numpy())


def _check(config_file: pathlib.Path, config: dict, supported: dict) -> None:
    for key, value in supported.items():
        if config.get(key, value) != value:
            raise ValueError(f"{config_file}: {key} = {config[key]!r} is not supported (Karlo's is {value!r})")


# -- the text encoder ---------------------------------------------------------------------


def load_text_encoder(snapshot: pathlib.Path, dtype=jnp.float32) -> tuple[clip.ProjectedTextEncoder, Any,
                                                                           ClipTokenizer]:
    """(module, parameters, tokenizer) of the snapshot's CLIP text encoder and tokenizer."""
    config_file, config = component_config(snapshot, "text_encoder")
    text = hf_clip.text_tower(config_file, config)
    tokenizer = ClipTokenizer.load(pathlib.Path(snapshot) / "tokenizer")
    module = clip.ProjectedTextEncoder(
        clip.TextEncoder(vocab_size=text["vocab_size"], length=text["max_position_embeddings"], dtype=dtype,
                         eos_id=tokenizer.eos_id, attention_bias=True, activation=hf_clip.HF_ACTIVATIONS[text["hidden_act"]],
                         norm_eps=text["layer_norm_eps"], **hf_clip.tower_sizes(text)),
        projection_dim=config.get("projection_dim", 512))
    path, tensors = read_weights(config_file.parent)
    abstract = abstract_params(module, jnp.zeros((1, text["max_position_embeddings"]), jnp.int32))
    params = fill(abstract, tensors, hf_clip.hf_name, origin=str(path), ignored=hf_clip.BUFFERS, dtype=dtype)
    return module, params, tokenizer


def no_image_encoder(snapshot: pathlib.Path) -> FileNotFoundError:
    return FileNotFoundError(f"{pathlib.Path(snapshot) / 'image_encoder'} not found: variations, and reranking draws "
                             f"by CLIP (karlo.candidates > 1), need Karlo's image-variation snapshot "
                             f"(karlo-v1-alpha-image-variations), which adds image_encoder/ and feature_extractor/; "
                             f"unclip-generate reads its encoder from karlo.image_encoder=DIR")


def load_image_encoder(snapshot: pathlib.Path, dtype=jnp.float32) -> tuple[clip.ProjectedImageEncoder, Any]:
    """(module, parameters) of the image-variation snapshot's CLIP image encoder; the module
    standardises pixels with `feature_extractor/preprocessor_config.json`'s mean and std."""
    directory = pathlib.Path(snapshot) / "image_encoder"
    if not directory.is_dir():
        raise no_image_encoder(snapshot)
    config_file, config = component_config(snapshot, "image_encoder")
    vision = hf_clip.vision_tower(config_file, config)
    processor_file = pathlib.Path(snapshot) / "feature_extractor" / "preprocessor_config.json"
    processor = read_json(processor_file) if processor_file.is_file() else {}
    module = clip.ProjectedImageEncoder(
        clip.VisionEncoder(patch_size=vision["patch_size"], image_size=vision["image_size"], dtype=dtype,
                           pixel_mean=tuple(processor.get("image_mean", clip.OPENAI_PIXEL_MEAN)),
                           pixel_std=tuple(processor.get("image_std", clip.OPENAI_PIXEL_STD)), pre_norm=True,
                           patch_bias=False, attention_bias=True, activation=hf_clip.HF_ACTIVATIONS[vision["hidden_act"]],
                           norm_eps=vision["layer_norm_eps"], **hf_clip.tower_sizes(vision)),
        projection_dim=config.get("projection_dim", 512))
    path, tensors = read_weights(directory)
    size = vision["image_size"]
    abstract = abstract_params(module, jnp.zeros((1, size, size, 3), jnp.uint8))
    return module, fill(abstract, tensors, hf_clip.hf_name, origin=str(path), ignored=hf_clip.BUFFERS, dtype=dtype)


def text_mask(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """`bool [batch, length]`: the positions up to each row's first end-of-text (the tokenizer's
    attention mask, which Karlo's prior and decoder attend under)."""
    tokens = np.asarray(tokens)
    first_eos = np.where((tokens == eos_id).any(axis=1), (tokens == eos_id).argmax(axis=1), tokens.shape[1] - 1)
    return np.arange(tokens.shape[1])[None] <= first_eos[:, None]


# -- the prior ----------------------------------------------------------------------------

# PriorTransformer options that Karlo leaves at their defaults and this module does not implement otherwise.
_PRIOR_SUPPORTED = dict(norm_in_type=None, embedding_proj_norm_type=None, encoder_hid_proj_type="linear",
                        added_emb_type="prd", time_embed_act_fn="silu", dropout=0.0, additional_embeddings=4)


def prior_module(config_file: pathlib.Path, config: dict, dtype=jnp.float32) -> DiffusionPrior:
    """The `DiffusionPrior` of a PriorTransformer `config.json`."""
    _check(config_file, config, _PRIOR_SUPPORTED)
    heads, head_dim = config.get("num_attention_heads", 32), config.get("attention_head_dim", 64)
    width, embedding_dim = heads * head_dim, config.get("embedding_dim", 768)
    for key in ("time_embed_dim", "embedding_proj_dim", "clip_embed_dim"):
        expected = width if key == "time_embed_dim" else embedding_dim
        if config.get(key) not in (None, expected):
            raise ValueError(f"{config_file}: {key} = {config[key]} is not supported (only {expected})")
    return DiffusionPrior(vocab_size=0, caption_length=config.get("num_embeddings", 77), width=width,
                          depth=config.get("num_layers", 20), num_heads=heads, head_dim=head_dim, mlp_dim=4 * width,
                          dtype=dtype, attention_bias=True, activation="gelu_erf", norm_eps=1e-5,
                          timestep_frequencies=width)


def transformer_block_name(prefix: str, inner: tuple[str, ...]):
    """The diffusers name of a parameter of a `DecoderBlock` in a BasicTransformerBlock."""
    part, *rest = inner
    if part in ("attention_norm", "mlp_norm"):
        return f"{prefix}.{ {'attention_norm': 'norm1', 'mlp_norm': 'norm3'}[part]}.{_LAYER_NORMS[rest[0]]}", as_is
    if part == "attention":
        projection, _, is_bias = rest[0].partition("_")
        name = {"query": "to_q", "key": "to_k", "value": "to_v", "out": "to_out.0"}[projection]
        return f"{prefix}.attn1.{name}.{'bias' if is_bias else 'weight'}", reshaped if is_bias else dense_kernel
    dense, leaf = rest  # mlp / Dense_0 or Dense_1 / kernel or bias
    suffix, transform = _DENSE[leaf]
    return f"{prefix}.ff.{ {'Dense_0': 'net.0.proj', 'Dense_1': 'net.2'}[dense]}.{suffix}", transform


def _timestep_name(rest):
    """diffusers' name of a `TimestepMLP` parameter (`Dense_0` / `Dense_1`, kernel or bias)."""
    suffix, transform = _DENSE[rest[1]]
    return f"time_embedding.{ {'Dense_0': 'linear_1', 'Dense_1': 'linear_2'}[rest[0]]}.{suffix}", transform


_PRIOR_DENSES = {"caption_in": "encoder_hidden_states_proj", "text_embedding_in": "embedding_proj",
                 "image_embedding_in": "proj_in", "out": "proj_to_clip_embeddings"}


def prior_name(path: tuple[str, ...]):
    """The diffusers name of a Flax parameter of Karlo's `DiffusionPrior`, and how to lay it out."""
    top, *rest = path
    if top in _PRIOR_DENSES:
        suffix, transform = _DENSE[rest[0]]
        return f"{_PRIOR_DENSES[top]}.{suffix}", transform
    if top == "query":
        return "prd_embedding", reshaped
    if top == "position":
        return "positional_embedding", reshaped
    if top.startswith("TimestepMLP"):
        return _timestep_name(rest)
    block, *inner = rest  # top is TransformerStack_0
    if block == "final_norm":
        return f"norm_out.{_LAYER_NORMS[inner[0]]}", as_is
    return transformer_block_name(f"transformer_blocks.{int(block.removeprefix('block_'))}", tuple(inner))


@dataclasses.dataclass(frozen=True, eq=False)
class KarloPrior:
    """Karlo's prior: the module, its parameters, and the statistics its outputs are
    de-normalised with (`clip_mean + clip_std · x̂₀`, diffusers' `post_process_latents`)."""

    module: DiffusionPrior
    params: Any
    clip_mean: np.ndarray  # [P]
    clip_std: np.ndarray  # [P]


def load_prior(snapshot: pathlib.Path, dtype=jnp.float32) -> KarloPrior:
    config_file, config = component_config(snapshot, "prior")
    module = prior_module(config_file, config, dtype)
    path, tensors = read_weights(config_file.parent)
    embedding_dim, length = config.get("embedding_dim", 768), module.caption_length
    abstract = abstract_params(module, jnp.zeros((1, embedding_dim)), jnp.zeros((1,), jnp.int32),
                               jnp.zeros((1, embedding_dim)), jnp.zeros((1, length, embedding_dim)),
                               jnp.ones((1, length), bool))
    params = fill(abstract, tensors, prior_name, origin=str(path), ignored=("clip_mean", "clip_std"), dtype=dtype)
    statistic = lambda name: np.asarray(tensors[name], np.float32).reshape(-1)
    return KarloPrior(module, params, statistic("clip_mean"), statistic("clip_std"))


# -- the schedulers ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StageSchedule:
    """How one of Karlo's stages samples (an UnCLIPScheduler config): DDPM on the respaced
    cosine schedule, x̂₀ clipped to `±clip_range`, and with `learned_variance` the model's
    second half of channels interpolating the log variance between the posterior's and β's."""

    num_timesteps: int
    prediction: str  # "epsilon" or "x0"
    clip_range: float  # 0: no clipping
    learned_variance: bool


def load_schedule(snapshot: pathlib.Path, name: str) -> StageSchedule:
    config_file, config = component_config(snapshot, name, "scheduler_config.json")
    _check(config_file, config, dict(beta_schedule="squaredcos_cap_v2"))
    prediction = {"epsilon": "epsilon", "sample": "x0"}.get(config.get("prediction_type", "epsilon"))
    variance = config.get("variance_type", "fixed_small_log")
    if prediction is None or variance not in ("fixed_small_log", "learned_range"):
        raise ValueError(f"{config_file}: prediction_type {config.get('prediction_type')!r} / variance_type "
                         f"{variance!r} is not one UnCLIPScheduler supports")
    return StageSchedule(config.get("num_train_timesteps", 1000), prediction,
                         config.get("clip_sample_range", 1.0) if config.get("clip_sample", True) else 0.0,
                         variance == "learned_range")


# -- the UNets ----------------------------------------------------------------------------

# Options of diffusers' UNets that Karlo's configs leave at these values, the only ones implemented here.
_UNET_SUPPORTED = dict(act_fn="silu", center_input_sample=False, flip_sin_to_cos=True, freq_shift=0, dropout=0.0,
                       downsample_padding=1, mid_block_scale_factor=1, time_embedding_type="positional",
                       time_embedding_dim=None, class_embeddings_concat=False, only_cross_attention=False,
                       dual_cross_attention=False, resnet_skip_time_act=False, resnet_out_scale_factor=1.0,
                       cross_attention_norm=None, encoder_hid_dim=None, addition_embed_type=None,
                       time_cond_proj_dim=None, conv_in_kernel=3, conv_out_kernel=3, num_class_embeds=None,
                       time_embedding_act_fn=None, timestep_post_act=None, attn_norm_num_groups=None)
_ATTENTION_DOWN, _ATTENTION_UP = "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnUpBlock2D"
_PLAIN_DOWN, _PLAIN_UP = "ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D"


@dataclasses.dataclass(frozen=True)
class UNetLayout:
    """What the loader needs of a UNet config beyond the module: its levels, where they
    attend, and so diffusers' names of its blocks."""

    levels: int
    num_res_blocks: int
    attention_levels: tuple[int, ...]
    mid_attention: bool

    def block_names(self) -> tuple[list[str], list[str]]:
        """diffusers' prefixes of the residual blocks and of the attention layers, each in the
        order `nn.unet.UNet` creates them (so `ResBlock_i` is the i-th of the first list)."""
        residual, attention = [], []
        for level in range(self.levels):
            for j in range(self.num_res_blocks):
                residual.append(f"down_blocks.{level}.resnets.{j}")
                if level in self.attention_levels:
                    attention.append(f"down_blocks.{level}.attentions.{j}")
            if level < self.levels - 1:
                residual.append(f"down_blocks.{level}.downsamplers.0")
        residual += ["mid_block.resnets.0", "mid_block.resnets.1"]
        attention += ["mid_block.attentions.0"] if self.mid_attention else []
        for i, level in enumerate(reversed(range(self.levels))):
            for j in range(self.num_res_blocks + 1):
                residual.append(f"up_blocks.{i}.resnets.{j}")
                if level in self.attention_levels:
                    attention.append(f"up_blocks.{i}.attentions.{j}")
            if level > 0:
                residual.append(f"up_blocks.{i}.upsamplers.0")
        return residual, attention


def unet_module(config_file: pathlib.Path, config: dict, dtype=jnp.float32,
                class_embed_type: str | None = None) -> tuple[UNet, UNetLayout]:
    """The `UNet` (and its layout) of a Karlo UNet2DConditionModel or UNet2DModel `config.json`;
    its `class_embed_type` must be the caller's (the decoder's `identity`: the CLIP embeddings
    added to the timestep embedding; none for the super-resolution UNets)."""
    _check(config_file, config, dict(_UNET_SUPPORTED, class_embed_type=class_embed_type))
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    if not set(down) <= {_ATTENTION_DOWN, _PLAIN_DOWN} or not set(up) <= {_ATTENTION_UP, _PLAIN_UP}:
        raise ValueError(f"{config_file}: block types {down} / {up} are not Karlo's ({_PLAIN_DOWN}, "
                         f"{_ATTENTION_DOWN} down; {_ATTENTION_UP}, {_PLAIN_UP} up)")
    attention_levels = tuple(i for i, kind in enumerate(down) if kind == _ATTENTION_DOWN)
    if [kind == _ATTENTION_UP for kind in reversed(up)] != [kind == _ATTENTION_DOWN for kind in down]:
        raise ValueError(f"{config_file}: up_block_types {up} do not mirror down_block_types {down}")
    mid = config.get("mid_block_type", "UNetMidBlock2D")
    mid_attention = {"UNetMidBlock2DSimpleCrossAttn": True, "UNetMidBlock2D": config.get("add_attention", True)}.get(mid)
    if mid_attention is None or (mid == "UNetMidBlock2D" and mid_attention):
        raise ValueError(f"{config_file}: mid_block_type {mid!r} (add_attention {config.get('add_attention')}) is not "
                         f"Karlo's UNetMidBlock2DSimpleCrossAttn, or UNetMidBlock2D without attention")
    channels = list(config["block_out_channels"])
    base = channels[0]
    if any(c % base for c in channels):
        raise ValueError(f"{config_file}: block_out_channels {channels} are not multiples of the first")
    size, shift = config["sample_size"], config.get("resnet_time_scale_shift", "default")
    if shift not in ("default", "scale_shift"):
        raise ValueError(f"{config_file}: resnet_time_scale_shift {shift!r} is not 'default' or 'scale_shift'")
    unet = UNet(base_channels=base, channel_mults=tuple(c // base for c in channels),
                num_res_blocks=config.get("layers_per_block", 2),
                attention_resolutions=tuple(size // 2 ** level for level in attention_levels) if mid_attention else (),
                num_heads=1, head_channels=config.get("attention_head_dim") or 0, out_channels=config["out_channels"],
                dtype=dtype, resblock_updown=True, scale_shift=shift == "scale_shift",
                norm_groups=config.get("norm_num_groups", 32), norm_eps=config.get("norm_eps", 1e-5))
    return unet, UNetLayout(len(channels), unet.num_res_blocks, attention_levels, mid_attention)


_RES_BLOCK = {"GroupNorm_0": "norm1", "Conv_0": "conv1", "Dense_0": "time_emb_proj", "GroupNorm_1": "norm2",
              "Conv_1": "conv2", "Conv_2": "conv_shortcut"}
_ATTENTION = {"GroupNorm_0": "group_norm", "qkv": "qkv", "context_kv": "context_kv", "out": "to_out.0"}
_LEAVES = {"scale": ("weight", as_is), "bias": ("bias", as_is), "kernel": ("weight", None)}


def _leaf(prefix: str, part: str, leaf: str):
    suffix, transform = _LEAVES[leaf]
    if transform is None:  # a kernel: a convolution's or a dense layer's
        transform = conv_kernel if part.startswith("Conv") else dense_kernel
    return f"{prefix}.{suffix}", transform


def fuse_attention_projections(tensors: Tensors, prefixes: list[str]) -> Tensors:
    """`tensors` with each attention layer's query, key and value projections (`to_q`, `to_k`,
    `to_v`) joined into one `qkv`, and the context's (`add_k_proj`, `add_v_proj`) into
    `context_kv`, as this project's `AttentionBlock` holds them (joined when read)."""
    readers = dict(tensors.readers)
    for prefix in prefixes:
        for fused, parts in (("qkv", ("to_q", "to_k", "to_v")), ("context_kv", ("add_k_proj", "add_v_proj"))):
            for leaf in ("weight", "bias"):
                names = [f"{prefix}.{part}.{leaf}" for part in parts]
                if all(name in readers for name in names):
                    joined = [readers.pop(name) for name in names]
                    readers[f"{prefix}.{fused}.{leaf}"] = lambda joined=joined: np.concatenate([r() for r in joined])
    return Tensors(readers)


def unet_name(layout: UNetLayout):
    """The rule naming a `UNet` parameter by diffusers' names (after `fuse_attention_projections`)."""
    residual, attention = layout.block_names()

    def rule(path: tuple[str, ...]):
        top, *rest = path
        if top.startswith("ResBlock_"):
            return _leaf(f"{residual[int(top.removeprefix('ResBlock_'))]}.{_RES_BLOCK[rest[0]]}", rest[0], rest[1])
        if top.startswith("AttentionBlock_"):
            return _leaf(f"{attention[int(top.removeprefix('AttentionBlock_'))]}.{_ATTENTION[rest[0]]}", rest[0],
                         rest[1])
        return _leaf({"Conv_0": "conv_in", "GroupNorm_0": "conv_norm_out", "Conv_1": "conv_out"}[top], top, rest[0])

    return rule


# -- the decoder (with the text projection) and the super-resolution UNets ----------------

_TEXT_PROJ = {"text_embedding_projection": "embedding_proj",
              "image_embedding_projection": "clip_image_embeddings_project_to_time_embeddings",
              "clip_tokens": "clip_extra_context_tokens_proj", "text_projection": "encoder_hidden_states_proj"}


def load_decoder(snapshot: pathlib.Path, dtype=jnp.float32) -> tuple[KarloDecoder, Any]:
    """Karlo's decoder: `decoder` (UNet2DConditionModel) and `text_proj` (UnCLIPTextProjModel)
    as one `KarloDecoder`, and its parameters."""
    config_file, config = component_config(snapshot, "decoder")
    proj_file, proj_config = component_config(snapshot, "text_proj")
    unet, layout = unet_module(config_file, config, dtype, class_embed_type="identity")
    context_dim = config["cross_attention_dim"]
    if proj_config.get("cross_attention_dim") != context_dim:
        raise ValueError(f"{proj_file}: cross_attention_dim {proj_config.get('cross_attention_dim')} is not the "
                         f"decoder's {context_dim} ({config_file})")
    module = KarloDecoder(unet, embed_dim=4 * unet.base_channels, context_dim=context_dim,
                          num_clip_tokens=proj_config.get("clip_extra_context_tokens", 4), dtype=dtype)
    decoder_path, decoder_tensors = read_weights(config_file.parent)
    proj_path, proj_tensors = read_weights(proj_file.parent)
    fused = fuse_attention_projections(decoder_tensors, layout.block_names()[1])
    tensors = Tensors({**fused.prefixed("decoder.").readers, **proj_tensors.prefixed("text_proj.").readers})
    unet_rule = unet_name(layout)

    def rule(path):
        top, *rest = path
        if top == "unet":
            name, transform = unet_rule(tuple(rest))
            return f"decoder.{name}", transform
        if top.startswith("TimestepMLP"):
            name, transform = _timestep_name(rest)
            return f"decoder.{name}", transform
        if top == "null_image_embedding":
            return "text_proj.learned_classifier_free_guidance_embeddings", as_is
        if top == "text_norm":
            return f"text_proj.text_encoder_hidden_states_norm.{_LAYER_NORMS[rest[0]]}", as_is
        suffix, transform = _DENSE[rest[0]]
        return f"text_proj.{_TEXT_PROJ[top]}.{suffix}", transform

    size, embedding_dim = config["sample_size"], proj_config.get("clip_embeddings_dim", 768)
    length = 77
    abstract = abstract_params(module, jnp.zeros((1, size, size, config.get("in_channels", 3))),
                               jnp.zeros((1,), jnp.int32), jnp.zeros((1, embedding_dim)), jnp.zeros((1, embedding_dim)),
                               jnp.zeros((1, length, embedding_dim)), jnp.ones((1, length), bool))
    return module, fill(abstract, tensors, rule, origin=f"{decoder_path} and {proj_path}", dtype=dtype)


def load_super_res(snapshot: pathlib.Path, name: str, dtype=jnp.float32) -> tuple[Upsampler, Any]:
    """`super_res_first` or `super_res_last` (UNet2DModel) as an `Upsampler` that resizes the
    small image bicubically, as the pipeline does, and its parameters."""
    config_file, config = component_config(snapshot, name)
    unet, layout = unet_module(config_file, config, dtype)
    if config.get("in_channels", 3) != 2 * config["out_channels"]:
        raise ValueError(f"{config_file}: in_channels {config.get('in_channels')} is not twice out_channels "
                         f"{config['out_channels']} (the noised image beside the upsampled one)")
    module = Upsampler(unet, embed_dim=4 * unet.base_channels, dtype=dtype, resize="bicubic")
    path, tensors = read_weights(config_file.parent)
    unet_rule = unet_name(layout)

    def rule(path):
        top, *rest = path
        return _timestep_name(rest) if top.startswith("TimestepMLP") else unet_rule(tuple(rest))

    size, channels = config["sample_size"], config["out_channels"]
    abstract = abstract_params(module, jnp.zeros((1, size, size, channels)), jnp.zeros((1,), jnp.int32),
                               jnp.zeros((1, size // 4, size // 4, channels)))
    return module, fill(abstract, tensors, rule, origin=str(path), dtype=dtype)
