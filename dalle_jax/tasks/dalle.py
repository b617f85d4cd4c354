"""Training and sampling the DALL·E transformer.

It needs the run's two tokenizers: `WORKDIR/text_tokenizer.model` and the image tokenizer
trained (or imported: OpenAI's dVAE) into `WORKDIR/image_tokenizer`, whose own config there
sets the token grid and the number of codes. The training images are encoded to tokens once
(cached under `WORKDIR/image_tokens/`), so training steps only run the transformer.

Loss: `text_weight` x text cross-entropy + `image_weight` x image cross-entropy (the paper's
1/8 and 7/8). Captions are replaced by the empty caption with probability
`caption_dropout`, which is what classifier-free guidance samples against.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dalle_jax import viz
from dalle_jax.data import pipeline
from dalle_jax.data.cache import cached_rows
from dalle_jax.models.dalle import DalleTransformer, sample_best_of, sample_image_tokens, teacher_forced_logits
from dalle_jax.nn import conv, masks
from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask, downsample_factor
from dalle_jax.text.tokenizer import TextTokenizer
from dalle_jax.train import partitioning, trainer


def cached_image_tokens(workdir: pathlib.Path, split: str, source, tokenizer, variables, tokenizer_step: int,
                        batch_size: int = 256) -> np.ndarray:
    """Image tokens `int32 [len(source), h * w]` of every example of a split, encoded once per
    tokenizer checkpoint and kept on disk (resumable, and split across processes: `cached_rows`)."""
    variables = partitioning.host_local(variables)  # each process encodes its own chunks
    encode = jax.jit(lambda images: tokenizer.apply(variables, images, method="encode"),
                     compiler_options=conv.compiler_options())

    def encode_rows(begin: int, end: int) -> np.ndarray:
        codes = [np.asarray(encode(np.stack([source[i]["image"] for i in range(b, min(b + batch_size, end))])))
                 for b in range(begin, end, batch_size)]
        return np.concatenate([c.reshape(len(c), -1) for c in codes]).astype(np.int32)

    path = workdir / "image_tokens" / f"{split}_n{len(source)}_tokenizer_step{tokenizer_step}.npy"
    return cached_rows(path, len(source), encode_rows, chunk_size=4 * batch_size, desc=f"encode {split} images")


def _train_split_tokens(data_config, workdir: pathlib.Path, tokenizer, variables, tokenizer_step: int) -> np.ndarray:
    source = pipeline.load_sources(data_config)["train"]
    return cached_image_tokens(workdir, "train", source, tokenizer, variables, tokenizer_step)


def _image_tokenizer_run(config, workdir: pathlib.Path):
    """(config, step) of the image tokenizer in `WORKDIR/image_tokenizer`. Its kind must be the
    one `config.image_tokenizer` asks for."""
    run_dir = workdir / "image_tokenizer"
    how = (f"run `python run.py import-weights --kind openai-dvae --workdir {workdir}`"
           if config.image_tokenizer.kind == "openai_dvae" else
           f"run `python run.py train-image-tokenizer --workdir {workdir}`")
    step = trainer.trained_step(run_dir)
    if step is None:
        raise FileNotFoundError(f"no image tokenizer in {run_dir}; {how} first")
    tokenizer_config = trainer.run_config(run_dir)
    if tokenizer_config.image_tokenizer.kind != config.image_tokenizer.kind:
        raise ValueError(f"{run_dir} holds a {tokenizer_config.image_tokenizer.kind!r} image tokenizer but the config "
                         f"asks for image_tokenizer.kind={config.image_tokenizer.kind!r}; use another --workdir or set "
                         f"--config.image_tokenizer.kind={tokenizer_config.image_tokenizer.kind}")
    return tokenizer_config, step


def training_caption(example: dict, text_config, rng: np.random.Generator) -> str:
    """The caption a training example is read with: with `synthetic_caption_field` set, that
    synthetic caption with probability `synthetic_caption_rate` (DALL·E 3 section 3.1 blends
    at 0.95), else the original `caption_field`."""
    if text_config.synthetic_caption_field and rng.random() < text_config.synthetic_caption_rate:
        return example[text_config.synthetic_caption_field]
    return example[text_config.caption_field]


def build_transformer(config, text_vocab_size: int, grid_size: tuple[int, int],
                      image_vocab_size: int | None = None) -> DalleTransformer:
    """The transformer of `config.model`; `image_vocab_size` defaults to `config.image_tokenizer.num_codes`."""
    m = config.model
    return DalleTransformer(
        text_vocab_size=text_vocab_size, image_vocab_size=image_vocab_size or config.image_tokenizer.num_codes,
        text_length=config.text.max_length, grid_size=grid_size, embed_dim=m.embed_dim, depth=m.depth,
        num_heads=m.num_heads, head_dim=m.head_dim, mlp_dim=m.mlp_dim,
        attention_kinds=masks.layer_kinds(m.attention, m.depth), conv_kernel=m.conv_kernel, dtype=jnp.dtype(m.dtype),
        # `.get`: runs saved before these keys existed
        remat=m.get("remat", "none"), scan_layers=m.get("scan_layers", False),
        attention_impl=m.get("attention_impl", "auto"))


@dataclasses.dataclass(frozen=True, eq=False)
class DalleTask:
    model: DalleTransformer
    text_tokenizer: TextTokenizer
    image_tokenizer: nn.Module
    image_tokenizer_variables: Any
    encode_training_images: Callable[[], np.ndarray]  # `train_image_tokens`, computed
    config: Any
    name: str = "dalle"

    @classmethod
    def from_config(cls, config, workdir: str | pathlib.Path) -> "DalleTask":
        """The task of `config` with the work dir's tokenizers. The training images are encoded
        when training first reads them (`train_image_tokens`): sampling needs no data set."""
        workdir = pathlib.Path(workdir)
        text_tokenizer = TextTokenizer.load(workdir)
        tokenizer_config, step = _image_tokenizer_run(config, workdir)
        tokenizer_task = ImageTokenizerTask.from_config(tokenizer_config)
        variables = trainer.load_variables(tokenizer_config, workdir / tokenizer_task.name, tokenizer_task)
        encode = functools.partial(_train_split_tokens, config.data, workdir, tokenizer_task.model, variables, step)
        settings = tokenizer_config.image_tokenizer
        grid = (config.data.image_size // downsample_factor(settings),) * 2
        model = build_transformer(config, text_tokenizer.vocab_size, grid, settings.num_codes)
        return cls(model, text_tokenizer, tokenizer_task.model, variables, encode, config)

    @functools.cached_property
    def train_image_tokens(self) -> np.ndarray:
        """`int32 [num_train, num_image_tokens]`, row i = train example i (encoded once, cached on disk)."""
        return self.encode_training_images()

    # -- training ------------------------------------------------------------------------

    def preprocess(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        caption = training_caption(example, self.config.text, rng)
        if rng.random() < self.config.loss.caption_dropout:
            caption = ""
        return {"text": self.text_tokenizer.encode(caption, self.config.text.max_length),
                "image_tokens": self.train_image_tokens[int(example["index"])]}

    def init(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, _sequence(batch)[:, :-1])

    def loss_fn(self, params, batch: dict, rng: jax.Array, *, step, model_state):
        del rng, step
        tokens = _sequence(batch)
        text_length = self.model.text_length
        text_logits, image_logits = teacher_forced_logits(self.model, params, tokens)
        text_loss = optax.softmax_cross_entropy_with_integer_labels(text_logits, tokens[:, 1:text_length]).mean()
        image_targets = tokens[:, text_length:]
        image_loss = optax.softmax_cross_entropy_with_integer_labels(image_logits, image_targets).mean()
        weights = self.config.loss
        loss = weights.text_weight * text_loss + weights.image_weight * image_loss
        metrics = {"text_loss": text_loss, "image_loss": image_loss,
                   "image_accuracy": jnp.mean(jnp.argmax(image_logits, -1) == image_targets)}
        return loss, metrics, model_state

    # -- sampling ------------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> np.ndarray:
        return self.text_tokenizer.encode(prompts, self.config.text.max_length)

    @functools.cached_property
    def _sampler(self):
        s = self.config.sample
        # Guidance at scale 1 is the conditional model: skip the unconditional half.
        empty = (jnp.asarray(self.text_tokenizer.encode("", self.config.text.max_length))
                 if s.guidance_scale != 1.0 else None)
        kwargs = dict(empty_text=empty, guidance_scale=s.guidance_scale, temperature=s.temperature, top_k=s.top_k,
                      top_p=s.top_p)
        if s.candidates > 1:
            return jax.jit(lambda params, text, rng: sample_best_of(self.model, params, text, rng,
                                                                    candidates=s.candidates, **kwargs))
        return jax.jit(lambda params, text, rng: sample_image_tokens(self.model, params, text, rng, **kwargs))

    @functools.cached_property
    def _decoder(self):
        grid = self.model.grid_size
        return jax.jit(lambda tokens: self.image_tokenizer.apply(
            self.image_tokenizer_variables, tokens.reshape(tokens.shape[0], *grid), method="decode"),
            compiler_options=conv.compiler_options())

    def pictures(self, params, model_state) -> dict[str, np.ndarray]:
        """Samples for the captions of the first eight validation images, as `generate` draws them."""
        del model_state
        prompts = [e[self.config.text.caption_field] for e in pipeline.first_examples(self.config.data, "validation")]
        images = self.generate(params, prompts, jax.random.key(self.config.seed))
        return {"samples": viz.picture(images, prompts, columns=len(images))}

    def generate(self, params, prompts: list[str], rng: jax.Array) -> np.ndarray:
        """`uint8 [len(prompts), H, W, 3]` images, one per prompt.

        With `sample.candidates = N > 1`, each image is the best of N samples by the model's
        own likelihood (`sample_best_of`). `sample.batch_size` sequences are sampled per
        call: `batch_size // N` prompts.
        """
        s = self.config.sample
        if s.candidates < 1 or s.batch_size % s.candidates:
            raise ValueError(f"sample.candidates={s.candidates} must be ≥ 1 and divide sample.batch_size="
                             f"{s.batch_size}")
        size = s.batch_size // s.candidates
        images = []
        for i, begin in enumerate(range(0, len(prompts), size)):
            chunk = prompts[begin: begin + size]
            text = self.encode_prompts(chunk + [""] * (size - len(chunk)))  # one compiled shape
            tokens = self._sampler(params, text, jax.random.fold_in(rng, i))
            images.append(np.asarray(self._decoder(tokens))[: len(chunk)])
        return np.concatenate(images)


def _sequence(batch: dict) -> jax.Array:
    return jnp.concatenate([batch["text"], batch["image_tokens"]], axis=1)
