"""Importing OpenAI's released dVAE: `encoder.pkl` and `decoder.pkl` of the `dall_e` package.

The pickles are whole PyTorch modules, so reading them needs PyTorch and the `dall_e` package
(`pip install -e '.[convert]'`, docs/weights.md); `read_released` is the only code here that
does. The rest maps the state dict to `models/openai_dvae.py` by rule and writes
`WORKDIR/image_tokenizer` as an imported run, after which nothing needs PyTorch.
"""

from __future__ import annotations

import pathlib
import re

import jax.numpy as jnp
import ml_collections
import numpy as np

from dalle_jax.models.openai_dvae import OpenAIDiscreteVAE
from dalle_jax.train import trainer
from dalle_jax.weights.mapping import WeightsMismatchError, abstract_params, as_is, conv_kernel, fill

PARTS = ("encoder", "decoder")
CONVERT_EXTRA = ("pip install torch==2.13.0 && pip install -e '.[convert]' && pip install --no-deps DALL-E==0.1 "
                 "(docs/weights.md)")


def read_released(directory: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The state dicts of `DIR/encoder.pkl` and `DIR/decoder.pkl` as float32 NumPy arrays, named
    `encoder.blocks.input.w`, `decoder.blocks.group_1.block_1.res_path.conv_1.w` and so on."""
    directory = pathlib.Path(directory)
    missing = [directory / f"{part}.pkl" for part in PARTS if not (directory / f"{part}.pkl").is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(map(str, missing))} not found: --source is the directory holding "
                                "OpenAI's encoder.pkl and decoder.pkl")
    try:
        import dall_e  # noqa: F401  (the pickles name its classes)
        import torch
    except ImportError as error:
        raise ImportError(f"reading encoder.pkl and decoder.pkl needs PyTorch and OpenAI's dall_e package: "
                          f"{CONVERT_EXTRA}") from error
    tensors = {}
    for part in PARTS:
        path = directory / f"{part}.pkl"
        # The release pickles whole modules; they come from OpenAI's CDN, which the user trusts.
        module = torch.load(path, map_location="cpu", weights_only=False)
        if not hasattr(module, "state_dict"):
            raise ValueError(f"{path} holds a {type(module).__name__}, not the dall_e {part.capitalize()} module")
        tensors |= {f"{part}.{k}": v.detach().float().numpy() for k, v in module.state_dict().items()}
    return tensors


def settings_of(tensors: dict[str, np.ndarray]) -> dict:
    """`config.image_tokenizer` for the released sizes, read off the tensors' shapes."""
    def shape(name):
        if name not in tensors:
            raise WeightsMismatchError(f"{name.split('.')[0]}.pkl has no tensor {name.split('.', 1)[1]!r}: "
                                       "not the dall_e dVAE")
        return tensors[name].shape

    blocks = {m.group(1) for name in tensors if (m := re.match(r"encoder\.blocks\.group_1\.block_(\d+)\.", name))}
    return dict(kind="openai_dvae", num_codes=shape("encoder.blocks.output.conv.w")[0],
                hidden=shape("encoder.blocks.input.w")[0], blocks_per_group=len(blocks),
                init_channels=shape("decoder.blocks.input.w")[0], dtype="float32")


def released_name(path: tuple[str, ...]) -> str:
    """The state-dict name of a Flax parameter of `OpenAIDiscreteVAE`."""
    part, *rest = path
    *modules, leaf = rest
    if modules == [] and leaf.startswith("input_"):  # the decoder's input convolution, kept as a lookup table
        modules, leaf = ["input"], leaf.removeprefix("input_")
    modules = [{"output_conv": "output.conv"}.get(m, f"res_path.{m}" if m.startswith("conv_") else m)
               for m in modules]
    return ".".join([part, "blocks", *modules, {"kernel": "w", "bias": "b"}[leaf]])


def to_params(tensors: dict[str, np.ndarray], settings: dict) -> dict:
    """The Flax parameters of `OpenAIDiscreteVAE(**settings)` from the released tensors."""
    model = build(settings)
    abstract = abstract_params(model, jnp.zeros((1, 8, 8, 3), jnp.uint8))
    rule = lambda path: (released_name(path), conv_kernel if path[-1].endswith("kernel") else as_is)
    return fill(abstract, tensors, rule, origin="encoder.pkl/decoder.pkl")


def build(settings: dict) -> OpenAIDiscreteVAE:
    return OpenAIDiscreteVAE(hidden=settings["hidden"], blocks_per_group=settings["blocks_per_group"],
                             num_codes=settings["num_codes"], init_channels=settings["init_channels"])


def import_weights(source: str | pathlib.Path, workdir: str | pathlib.Path,
                   config: ml_collections.ConfigDict) -> dict:
    """Converts the released pickles in `source` into `WORKDIR/image_tokenizer` (`import_tensors`)."""
    return import_tensors(read_released(source), workdir, config)


def import_tensors(tensors: dict[str, np.ndarray], workdir: str | pathlib.Path,
                   config: ml_collections.ConfigDict) -> dict:
    """Writes `WORKDIR/image_tokenizer`, an imported run of the released tensors, for `config`'s
    data (`data.image_size`, a multiple of 8). Returns the tokenizer's settings."""
    if config.data.image_size % 8:
        raise ValueError(f"data.image_size={config.data.image_size} is not a multiple of 8, the dVAE's code size")
    settings = settings_of(tensors)
    params = to_params(tensors, settings)
    run_config = ml_collections.ConfigDict(config.to_dict())
    run_config.image_tokenizer = settings
    example = {"image": np.zeros((config.data.image_size, config.data.image_size, 3), np.uint8)}
    trainer.write_imported_run(pathlib.Path(workdir) / "image_tokenizer", run_config, example, {"params": params})
    return settings
