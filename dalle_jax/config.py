"""Loading experiment configs: Python files with `get_config(arg=None) -> ConfigDict`.

As in big_vision, a config is named by its file and an optional variant after a colon
(`configs/shapes_dalle.py:tiny`), and single values are overridden with dotted keys
(`train.steps=500`). A key that does not exist is an error that names the nearest
valid keys, and so is a value of the wrong type or out of its range: raised before anything starts.
"""

from __future__ import annotations

import ast
import difflib
import dataclasses
import importlib.util
import math
import pathlib
from typing import Any, Iterable, Mapping

import ml_collections

from dalle_jax.nn.attention import ATTENTION_IMPLEMENTATIONS
from dalle_jax.nn.transformer import REMAT_POLICIES


class ConfigError(ValueError):
    """A config file, key or value that cannot be used."""


def load_config(path: str, overrides: Iterable[str] | Mapping[str, Any] = ()) -> ml_collections.ConfigDict:
    """Loads `path[:variant]`, applies `overrides`, and returns the config locked.

    Args:
      path: a config file, optionally followed by `:variant`, passed to `get_config`.
      overrides: `"a.b=value"` strings (values parsed as Python literals, else kept as
        strings) or a mapping from dotted key to value.
    """
    config = config_from_file(path)
    apply_overrides(config, overrides)
    check_ranges(config)
    config.lock()
    return config


def config_from_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
    """`get_config(variant)` of `file[:variant]`, unlocked (a config file may build on another)."""
    file_name, _, variant = str(path).partition(":")
    file = pathlib.Path(file_name)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    spec = importlib.util.spec_from_file_location(f"_dalle_jax_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{file} defines no get_config()")
    try:
        return module.get_config(variant) if variant else module.get_config()
    except ValueError as error:  # an unknown variant
        raise ConfigError(f"{file}: {error}") from None


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf key of a config as a dotted path."""
    keys = []
    for name, value in config.items():
        key = f"{prefix}{name}"
        keys.extend(flat_keys(value, key + ".") if isinstance(value, ml_collections.ConfigDict) else [key])
    return keys


def nearest_keys(config: ml_collections.ConfigDict, key: str, n: int = 3) -> list[str]:
    """The valid dotted keys closest to a misspelt one."""
    keys = flat_keys(config)
    close = difflib.get_close_matches(key, keys, n=n, cutoff=0.5)
    if not close:  # fall back to keys sharing the last component
        close = [k for k in keys if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:n]
    return close


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str] | Mapping[str, Any]) -> None:
    """Sets dotted keys in place; unknown keys and ill-typed values raise `ConfigError`."""
    items = overrides.items() if isinstance(overrides, Mapping) else map(_split_override, overrides)
    for key, value in items:
        *parents, leaf = key.split(".")
        node = config
        for depth, part in enumerate(parents + [leaf]):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                hint = nearest_keys(config, key)
                raise ConfigError(f"unknown config key {key!r}" +
                                  (f"; did you mean {' or '.join(map(repr, hint))}?" if hint else ""))
            if depth < len(parents):
                node = node[part]
        try:
            node[leaf] = _coerce(value, node[leaf])
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config key {key!r}: cannot set {value!r}: {error}") from None


@dataclasses.dataclass(frozen=True)
class Interval:
    """The values a number may take: from `low` to `high`, each end included unless open."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


_COUNT, _NON_NEGATIVE, _FRACTION = Interval(1), Interval(0), Interval(0, 1)
_BELOW_ONE, _POSITIVE = Interval(0, 1, high_open=True), Interval(0, low_open=True)
# The range of each number a config holds, by its name (the last part of its key) wherever it
# sits: `train.steps` and `decoder.train.steps` alike. Names not listed are not checked.
RANGES: dict[str, Interval] = {
    **dict.fromkeys(("steps", "batch_size", "log_every", "save_every", "keep_checkpoints", "image_size",
                     "vocab_size", "max_length", "num_train", "embed_dim", "mlp_dim", "width", "depth", "num_heads",
                     "head_dim", "patch_size", "patch_kernel", "num_codes", "code_dim", "base_channels",
                     "num_res_blocks", "num_steps", "num_timesteps", "num_prompts", "candidates", "beam_size",
                     "chunk_size", "projection_dim", "num_buckets", "conv_kernel", "low_res_size", "crop_size",
                     "text_width", "text_depth", "num_candidates", "eval_images", "num_examples", "max_pixels",
                     "num_clip_tokens", "microbatches"), _COUNT),
    **dict.fromkeys(("warmup_steps", "eval_every", "image_every", "num_validation", "num_test_compositional", "worker_count",
                     "top_k", "kl_warmup_steps", "temperature_anneal_steps", "min_snr_gamma", "guidance_scale",
                     "eta", "temperature", "grad_clip_norm", "weight_decay", "kl_weight", "commitment_weight",
                     "max_blur_sigma", "max_noise_std", "seed", "peak_flops"), _NON_NEGATIVE),
    **dict.fromkeys(("validation_fraction", "synthetic_caption_rate", "end_lr_fraction", "image_weight",
                     "text_weight"), _FRACTION),
    **dict.fromkeys(("ema_decay", "b1", "b2", "dropout", "caption_dropout", "image_embedding_dropout"), _BELOW_ONE),
    **dict.fromkeys(("learning_rate", "eps", "temperature_start", "temperature_end"), _POSITIVE),
    "top_p": Interval(0, 1, low_open=True),
    "pca_variance": Interval(0, 1, low_open=True),
    "jpeg_quality": Interval(1, 100),
    "build_workers": Interval(-1),
}
# The values a string may take, by its name wherever it sits (`model.dtype`, `decoder.model.remat`).
CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": ("float32", "bfloat16", "float16"),
    "mu_dtype": ("", "float32", "bfloat16"),
    "remat": tuple(REMAT_POLICIES),
    "attention_impl": ATTENTION_IMPLEMENTATIONS,
}


def check_ranges(config: ml_collections.ConfigDict) -> None:
    """Raises `ConfigError` naming every number outside its range (`RANGES`; a mesh axis is -1 or ≥ 1)
    and every string that is not one of its `CHOICES`."""
    problems = []
    for key in flat_keys(config):
        value = config
        for part in key.split("."):
            value = value[part]
        name = key.rsplit(".", 1)[-1]
        if isinstance(value, str) and name in CHOICES and value not in CHOICES[name]:
            problems.append(f"{key!r} is {value!r}; it must be one of {CHOICES[name]}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key.startswith("mesh."):
            if value != -1 and value < 1:
                problems.append(f"{key!r} is {value!r}; it must be -1 (every device left) or ≥ 1")
        elif (interval := RANGES.get(name)) is not None and value not in interval:
            problems.append(f"{key!r} is {value!r}; it must be {interval}")
    if problems:
        raise ConfigError("config " + "; ".join(problems))


def _split_override(override: str) -> tuple[str, str]:
    key, sep, value = override.removeprefix("--config.").partition("=")
    if not sep:
        raise ConfigError(f"config override {override!r} should read key=value")
    return key, value


def _coerce(value: Any, current: Any) -> Any:
    """Parses a string to the type of the value it replaces."""
    if not isinstance(value, str) or isinstance(current, str):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    if isinstance(current, bool) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(current, float) and isinstance(parsed, int) and not isinstance(parsed, bool):
        return float(parsed)
    if isinstance(current, tuple) and isinstance(parsed, list):
        return tuple(parsed)
    if isinstance(current, tuple) and not isinstance(parsed, tuple):
        return (parsed,)
    return parsed


def base_config() -> ml_collections.ConfigDict:
    """The sections every experiment shares: data, text, mesh, sharding, optim, train.

    Config files start from this and add their `task` and `model` sections.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = ""

    c.data = ml_collections.ConfigDict()
    c.data.name = "shapes"  # or any tfds data set prepared as array_record in data_dir
    c.data.data_dir = "data"
    c.data.image_size = 64
    c.data.num_train = 20_000
    c.data.num_validation = 1_000
    c.data.num_test_compositional = 1_000
    c.data.seed = 0
    c.data.num_objects_probs = (0.4, 0.4, 0.2)
    c.data.worker_count = 0  # grain worker processes; 0 reads in the main process
    # Your own images and captions (data/ingest.py): KIND:PATH with KIND folder, webdataset or parquet.
    # When set, `data.name` names the data set, built once as DATA_DIR/image_text/NAME.
    c.data.source = ""
    c.data.validation_fraction = 0.01  # of the keys, by hash: a rebuild gives the same split
    c.data.upscale_small = False  # keep images whose shorter side is under image_size / 2 (else skipped)
    c.data.max_pixels = 89_478_485  # larger images are skipped (Pillow's decompression-bomb limit)
    c.data.image_format = "jpeg"  # how images are stored: jpeg or png (docs/data.md measures both)
    c.data.jpeg_quality = 95
    c.data.image_column = ""  # parquet: "" picks jpg, png, webp, image or img
    c.data.caption_column = ""  # parquet: "" picks txt, caption or text
    c.data.key_column = ""  # parquet: "" uses key if present, else FILE:ROW
    c.data.build_workers = -1  # processes decoding images while building: -1 every core, 0 this process alone

    c.text = ml_collections.ConfigDict()
    c.text.vocab_size = 512  # an upper bound: small corpora give fewer pieces
    c.text.max_length = 32
    c.text.caption_field = "caption"  # which caption feature text-to-image training reads
    # DALL·E 3 blending: read this (synthetic) caption feature instead with probability `synthetic_caption_rate`.
    c.text.synthetic_caption_field = ""
    c.text.synthetic_caption_rate = 0.95

    # Mesh axis sizes; one may be -1 (all remaining devices).
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding = ml_collections.ConfigDict()
    c.sharding.rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("vocab", "tensor"),
        ("kv", None),
        ("layers", None),  # the stacked axis of scanned layers (`model.scan_layers`)
        ("length", None),
        ("height", None),
        ("width", None),
        ("channels_in", "fsdp"),
        ("channels", "tensor"),
    )

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.end_lr_fraction = 0.1
    c.optim.grad_clip_norm = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.01
    c.optim.ema_decay = 0.0  # > 0: keep an EMA of the parameters (optim.params_ema); inference loads it
    c.optim.mu_dtype = ""  # Adam's first moment: "" in the parameters' dtype (float32), or "bfloat16" (half its bytes)

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1_000
    c.train.batch_size = 32  # global, over all devices and hosts
    c.train.log_every = 50
    c.train.save_every = 500
    c.train.keep_checkpoints = 3
    c.train.eval_every = 0  # steps between task.evaluate(...) calls (0: never); logged as eval/...
    # Steps between the task's pictures in TensorBoard (samples, reconstructions, captions; 0: never).
    c.train.image_every = 500
    c.train.progress_bar = True
    # Loss and gradients averaged over this many equal slices of each batch inside the step, one slice at a time:
    # the batch's activations need a `microbatches`-th of the memory, for the same update.
    c.train.microbatches = 1
    # Dense peak FLOP/s of one device, for `perf/mfu`; 0 reads it from `train.flops.PEAK_FLOPS` by device
    # kind (none for CPUs: then only `perf/model_flops_per_sec` is logged).
    c.train.peak_flops = 0.0
    return c


def stage_config(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
    """A copy of `config` whose `train` and `optim` sections are those of `config[stage]`.

    Multi-stage experiments (image tokenizer, then transformer) keep one file; each stage
    section may carry its own `train` and `optim`, laid over the shared ones.
    """
    if stage not in config:
        raise ConfigError(f"config has no {stage!r} section; sections: {sorted(config.keys())}")
    staged = ml_collections.ConfigDict(config.to_dict())
    for section in ("train", "optim"):
        if section in config[stage]:
            for key, value in config[stage][section].items():
                if key not in staged[section]:
                    raise ConfigError(f"unknown config key '{stage}.{section}.{key}'; "
                                      f"valid keys: {sorted(staged[section].keys())}")
                staged[section][key] = value
    staged.lock()
    return staged
