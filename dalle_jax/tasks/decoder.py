"""Training and sampling unCLIP's decoder and upsampler (`models/decoder.py`).

Both need the CLIP in `WORKDIR/clip`; the decoder also the run's text tokenizer. The
decoder learns `config.decoder.image_size` images (the data's, box-downsampled) from their
CLIP image embedding and caption. The upsamplers are a cascade (`config.upsamplers`, the
paper's 64 → 256 → 1024): each learns the data's images at its size from their
box-downsampled `low_res_size` versions, on random crops (convolution only, so it samples at
any size; the paper trains on crops of 1/4 size).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dalle_jax import viz
from dalle_jax.config import ConfigError
from dalle_jax.data import pipeline
from dalle_jax.diffusion import gaussian, samplers, schedules
from dalle_jax.models.clip import TextEncoder
from dalle_jax.models.decoder import Decoder, Upsampler, corrupt_low_res
from dalle_jax.models.pixels import box_downsample, to_uint8
from dalle_jax.nn import conv
from dalle_jax.nn.unet import UNet
from dalle_jax.tasks.clip import TrainedClip
from dalle_jax.text.tokenizer import TextTokenizer


def unit_range(image: np.ndarray) -> np.ndarray:
    """`uint8` pixels to `float32` in [-1, 1] (numpy, for the input pipeline)."""
    return image.astype(np.float32) / 127.5 - 1.0


def build_unet(m, out_channels: int = 3) -> UNet:
    return UNet(base_channels=m.base_channels, channel_mults=tuple(m.channel_mults), num_res_blocks=m.num_res_blocks,
                attention_resolutions=tuple(m.attention_resolutions), num_heads=m.num_heads,
                out_channels=out_channels, dropout=m.dropout,
                upsample_at_low_res=m.get("upsample_at_low_res", False),  # absent from configs saved before it
                dtype=jnp.dtype(m.dtype), remat=m.get("remat", "none"), attention_impl=m.get("attention_impl", "auto"))


def build_decoder(config, vocab_size: int, *, text_num_heads: int | None = None) -> Decoder:
    """The decoder `config.decoder.model` describes over captions of `vocab_size` tokens: its UNet
    (`build_unet`) and its caption encoder, `text_width` × `text_depth` in `text_num_heads` heads
    (the UNet's `num_heads` when None)."""
    m, dtype = config.decoder.model, jnp.dtype(config.decoder.model.dtype)
    num_heads = m.num_heads if text_num_heads is None else text_num_heads
    caption_encoder = TextEncoder(vocab_size=vocab_size, length=config.text.max_length, embed_dim=m.text_width,
                                  depth=m.text_depth, num_heads=num_heads, head_dim=m.text_width // num_heads,
                                  mlp_dim=4 * m.text_width, dtype=dtype, attention_impl=m.get("attention_impl", "auto"))
    return Decoder(build_unet(m), caption_encoder, embed_dim=m.embed_dim, num_clip_tokens=m.num_clip_tokens,
                   self_condition=config.decoder.get("self_condition", False),  # absent from older configs
                   dtype=dtype)


def train_split_embeddings(data_config, trained_clip: TrainedClip | str | pathlib.Path, what: str) -> np.ndarray:
    """`TrainedClip.cached_embeddings` of the training split: its images, or the caption feature
    `what`. `trained_clip` may be a work dir, whose CLIP is loaded only now."""
    if not isinstance(trained_clip, TrainedClip):
        trained_clip = TrainedClip.load(trained_clip)
    return trained_clip.cached_embeddings("train", pipeline.load_sources(data_config)["train"], what)


def schedule_of(section) -> schedules.NoiseSchedule:
    """The noise schedule a stage's config section (`decoder`, `upsampler`, `prior`) names."""
    gaussian.check_prediction(section.prediction)
    return schedules.make_schedule(section.schedule, section.num_timesteps)


def loss_with(section, model_fn, schedule, x0, rng, *, self_condition: bool = False):
    """Per-example `gaussian.diffusion_loss` with the prediction, loss weighting and training
    timesteps of a stage's config `section` (`decoder`, `upsampler`, `prior`)."""
    return gaussian.diffusion_loss(model_fn, schedule, x0, rng, section.prediction, section.min_snr_gamma,
                                   section.logit_normal_std, section.logit_normal_mean, self_condition)


def sample_with(section, model_fn, schedule, noise, rng, *, clip_x0: bool, self_condition: bool = False):
    """`samplers.sample` with the sampler, steps, spacing and η of `section.sample`."""
    s = section.sample
    return samplers.sample(model_fn, schedule, noise, rng, sampler=s.sampler, num_steps=s.num_steps,
                           prediction=section.prediction, eta=s.eta, clip_x0=clip_x0, spacing=s.spacing,
                           self_condition=self_condition)


def guided_with(section, schedule, apply, condition, null_condition):
    """`samplers.classifier_free_guidance` with the scale of `section.sample` and its
    `guidance_interval`, given as fractions of the schedule's timesteps."""
    s = section.sample
    interval = tuple(fraction * schedule.num_timesteps for fraction in s.guidance_interval)
    return samplers.classifier_free_guidance(apply, condition, null_condition, s.guidance_scale, interval)


@dataclasses.dataclass(frozen=True, eq=False)
class DecoderTask:
    model: Decoder
    schedule: schedules.NoiseSchedule
    text_tokenizer: TextTokenizer
    embed_training_images: Callable[[], np.ndarray]  # `train_image_embeddings`, computed
    config: Any
    name: str = "decoder"

    @classmethod
    def from_config(cls, config, workdir: str | pathlib.Path) -> "DecoderTask":
        """The decoder of `config`. The training images are CLIP-embedded with the work dir's CLIP
        when training first reads them (`train_image_embeddings`): sampling needs no data set."""
        text_tokenizer = TextTokenizer.load(workdir)
        embed = functools.partial(train_split_embeddings, config.data, workdir, "image")
        model = build_decoder(config, text_tokenizer.vocab_size)
        return cls(model, schedule_of(config.decoder), text_tokenizer, embed, config)

    @functools.cached_property
    def train_image_embeddings(self) -> np.ndarray:
        """`float32 [num_train, P]`, row i = train example i (embedded once, cached on disk)."""
        return self.embed_training_images()

    @property
    def compiler_options(self):
        """`jax.jit`'s options for this task's programs, its training step and samplers: a convolutional model's."""
        return conv.compiler_options()

    @property
    def section(self):
        return self.config.decoder

    @property
    def empty_caption(self) -> np.ndarray:
        return self.text_tokenizer.encode("", self.config.text.max_length)

    def with_sample(self, **settings) -> "DecoderTask":
        """This decoder with these `decoder.sample` settings (sampler, num_steps, eta, ...) in
        place of the config's; the parameters it samples with are the caller's, as always."""
        config = ml_collections.ConfigDict(self.config.to_dict())
        config.decoder.sample.update(**settings)
        return dataclasses.replace(self, config=config)

    def preprocess(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        image = box_downsample(unit_range(example["image"])[None], self.section.image_size)[0]
        caption = example[self.config.text.caption_field]
        embedding = self.train_image_embeddings[int(example["index"])]
        if rng.random() < self.section.caption_dropout:
            caption = ""
        if rng.random() < self.section.image_embedding_dropout:
            embedding = np.zeros_like(embedding)
        return {"image": image, "caption": self.text_tokenizer.encode(caption, self.config.text.max_length),
                "image_embedding": embedding}

    def init(self, rng: jax.Array, batch: dict) -> dict:
        t = jnp.zeros(batch["image"].shape[:1], jnp.int32)
        return self.model.init(rng, batch["image"], t, batch["image_embedding"], batch["caption"])

    def loss_fn(self, params, batch: dict, rng: jax.Array, *, step, model_state):
        del step
        loss_key, dropout_key = jax.random.split(rng)
        model_fn = lambda x, t, *x0_estimate: self.model.apply(
            {"params": params}, x, t, batch["image_embedding"], batch["caption"], *x0_estimate, deterministic=False,
            rngs={"dropout": dropout_key})
        loss = loss_with(self.section, model_fn, self.schedule, batch["image"], loss_key,
                         self_condition=self.model.self_condition)
        return loss.mean(), {}, model_state

    def _guided(self, params, image_embeddings, captions):
        apply = lambda x, t, c, *x0_estimate: self.model.apply({"params": params}, x, t, *c, *x0_estimate)
        condition = (image_embeddings, captions)
        null = (jnp.zeros_like(image_embeddings), jnp.broadcast_to(jnp.asarray(self.empty_caption), captions.shape))
        return guided_with(self.section, self.schedule, apply, condition, null)

    @functools.cached_property
    def sample(self):
        """Jitted `(params, image_embeddings [n, P], captions int32 [n, L], noise, rng)` to
        images `float32 [n, s, s, 3]` in [-1, 1], guided and sampled as `decoder.sample` says."""

        def sample(params, image_embeddings, captions, noise, rng):
            model_fn = self._guided(params, image_embeddings, captions)
            return jnp.clip(sample_with(self.section, model_fn, self.schedule, noise, rng, clip_x0=True,
                                        self_condition=self.model.self_condition), -1, 1)

        return jax.jit(sample, compiler_options=self.compiler_options)

    @functools.cached_property
    def invert(self):
        """Jitted `(params, images float [n, s, s, 3], image_embeddings, captions)` to the
        latents x_T from which DDIM (η = 0, `decoder.sample.num_steps`) redraws the images."""

        def invert(params, images, image_embeddings, captions):
            model_fn = self._guided(params, image_embeddings, captions)
            s = self.section.sample
            return samplers.ddim_invert(model_fn, self.schedule, images, num_steps=s.num_steps,
                                        prediction=self.section.prediction, spacing=s.spacing,
                                        self_condition=self.model.self_condition)

        return jax.jit(invert, compiler_options=self.compiler_options)

    def noise_shape(self, n: int) -> tuple[int, ...]:
        return (n, self.section.image_size, self.section.image_size, 3)

    def pictures(self, params, model_state) -> dict[str, np.ndarray]:
        """The first four training images above what the decoder draws from their CLIP embeddings
        and captions, as `decoder.sample` says."""
        del model_state
        examples = pipeline.first_examples(self.config.data, "train", 4)
        embeddings = self.train_image_embeddings[[int(e["index"]) for e in examples]]
        captions = self.text_tokenizer.encode([e[self.config.text.caption_field] for e in examples],
                                              self.config.text.max_length)
        key = jax.random.key(self.config.seed)
        drawn = to_uint8(self.sample(params, embeddings, captions, jax.random.normal(key, self.noise_shape(4)), key))
        labels = ["training image"] * 4 + ["from its CLIP embedding"] * 4
        return {"samples": viz.picture([*(e["image"] for e in examples), *np.asarray(drawn)], labels, columns=4)}


def upsampler_sections(config) -> tuple[str, ...]:
    """The config sections of the cascade of upsamplers, lowest resolution first (`config.upsamplers`)."""
    return tuple(config.get("upsamplers", ("upsampler",)))  # configs saved before the cascade had one stage


def cascade_sizes(config) -> dict[str, tuple[int, int]]:
    """`(low_res_size, image_size)` of each upsampler by section: each stage upsamples the one
    before it, the first the decoder's images and the last to `data.image_size`. Raises
    `ConfigError` naming the keys where the chain breaks."""
    sections = upsampler_sections(config)
    if not sections:
        raise ConfigError("upsamplers is empty; unCLIP needs at least one upsampler section (e.g. ('upsampler',))")
    missing = [name for name in sections if name not in config]
    if missing:
        raise ConfigError(f"upsamplers names {missing}, which the config has no section for; sections: "
                          f"{sorted(config.keys())}")
    low = [config[name].low_res_size for name in sections]
    sizes = dict(zip(sections, zip(low, low[1:] + [config.data.image_size])))
    if config.decoder.image_size != low[0]:
        raise ConfigError(f"decoder.image_size {config.decoder.image_size} must equal {sections[0]}.low_res_size "
                          f"{low[0]}: the first upsampler reads the decoder's images")
    for name, (low_res, size) in sizes.items():
        factor, crop = size // low_res, config[name].crop_size
        if size <= low_res or factor * low_res != size or crop % factor or crop > size:
            raise ConfigError(f"{name}: its images ({size} px: the next stage's low_res_size, or data.image_size for "
                              f"the last) must be a multiple above low_res_size {low_res}, and crop_size {crop} a "
                              "multiple of that factor, at most the image size")
    return sizes


@dataclasses.dataclass(frozen=True, eq=False)
class UpsamplerTask:
    """One stage of the cascade: `image_size` images from their box-downsampled `low_res_size`
    versions, as the config section `name` says."""

    model: Upsampler
    schedule: schedules.NoiseSchedule
    config: Any
    name: str = "upsampler"
    image_size: int = 0  # what the stage outputs (`cascade_sizes`)

    @classmethod
    def from_config(cls, config, workdir: str | pathlib.Path | None = None, *, stage: int = 1) -> "UpsamplerTask":
        """Stage `stage` (from 1, lowest resolution first) of `upsampler_sections(config)`."""
        del workdir
        sections = upsampler_sections(config)
        if not 1 <= stage <= len(sections):
            raise ConfigError(f"upsampler stage {stage}: the config's cascade has stages 1 to {len(sections)} "
                              f"(upsamplers = {sections})")
        name = sections[stage - 1]
        _, image_size = cascade_sizes(config)[name]
        m = config[name].model
        model = Upsampler(build_unet(m), embed_dim=m.embed_dim, dtype=jnp.dtype(m.dtype))
        return cls(model, schedule_of(config[name]), config, name, image_size)

    @property
    def compiler_options(self):
        """`jax.jit`'s options for this task's programs, its training step and samplers: a convolutional model's."""
        return conv.compiler_options()

    @property
    def section(self):
        return self.config[self.name]

    @property
    def factor(self) -> int:
        return self.image_size // self.section.low_res_size

    def preprocess(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        crop, factor = self.section.crop_size, self.factor
        image = box_downsample(unit_range(example["image"])[None], self.image_size)[0]
        top, left = (rng.integers(0, (self.image_size - crop) // factor + 1, size=2) * factor)
        image = image[top: top + crop, left: left + crop]
        return {"image": image, "low_res": box_downsample(image[None], crop // factor)[0]}

    def init(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, batch["image"], jnp.zeros(batch["image"].shape[:1], jnp.int32), batch["low_res"])

    def loss_fn(self, params, batch: dict, rng: jax.Array, *, step, model_state):
        del step
        corrupt_key, loss_key, dropout_key = jax.random.split(rng, 3)
        low_res = corrupt_low_res(batch["low_res"], corrupt_key, max_blur_sigma=self.section.max_blur_sigma,
                                  max_noise_std=self.section.max_noise_std)
        model_fn = lambda x, t: self.model.apply({"params": params}, x, t, low_res, deterministic=False,
                                                 rngs={"dropout": dropout_key})
        loss = loss_with(self.section, model_fn, self.schedule, batch["image"], loss_key)
        return loss.mean(), {}, model_state

    @functools.cached_property
    def sample(self):
        """Jitted `(params, low_res float [n, h, h, 3], noise [n, H, H, 3], rng)` to `float32
        [n, H, H, 3]` in [-1, 1] (`noise_shape(low_res.shape)` gives `noise`'s shape)."""

        def sample(params, low_res, noise, rng):
            model_fn = lambda x, t: self.model.apply({"params": params}, x, t, low_res)
            return jnp.clip(sample_with(self.section, model_fn, self.schedule, noise, rng, clip_x0=True), -1, 1)

        return jax.jit(sample, compiler_options=self.compiler_options)

    def noise_shape(self, low_res_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, height, width, channels = low_res_shape
        return (n, height * self.factor, width * self.factor, channels)

    def pictures(self, params, model_state) -> dict[str, np.ndarray]:
        """Four validation images at the low resolution, upsampled, and at the stage's resolution."""
        del model_state
        images = np.stack([e["image"] for e in pipeline.first_examples(self.config.data, "validation", 4)])
        images = box_downsample(unit_range(images), self.image_size)
        low_res = box_downsample(images, self.section.low_res_size)
        key = jax.random.key(self.config.seed)
        upsampled = self.sample(params, low_res, jax.random.normal(key, self.noise_shape(low_res.shape)), key)
        tiles = [*np.asarray(to_uint8(low_res)), *np.asarray(to_uint8(upsampled)), *np.asarray(to_uint8(images))]
        labels = ["low resolution"] * 4 + ["upsampled"] * 4 + ["original"] * 4
        return {"upsampled": viz.picture(tiles, labels, columns=4)}
