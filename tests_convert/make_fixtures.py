"""Writes the parity fixtures in tests/weights/fixtures/ from the PyTorch originals; the live
tests beside this file run the same functions at the released sizes.

Pinned (checked at start): torch 2.13.0 (CPU), transformers 5.24.0, diffusers 0.42.1, DALL-E 0.1,
tokenizers 0.23.3; CLIP's BPE merges come from open_clip_torch 3.3.0 (its bpe_simple_vocab_16e6.txt.gz,
the file OpenAI's CLIP ships). `make parity-fixtures` installs them in .venv-convert and runs:

  python tests_convert/make_fixtures.py [--out tests/weights/fixtures]

Every model has random weights (biases and LayerNorm parameters too, so that their mapping is
tested) from a fixed seed; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import importlib.metadata
import importlib.util
import json
import pathlib
import shutil
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.weights.parity import AWKWARD_TEXTS, FIXTURES  # noqa: E402

PINS = {"torch": "2.13.0", "transformers": "5.24.0", "diffusers": "0.42.1", "DALL-E": "0.1",
        "tokenizers": "0.23.3", "open_clip_torch": "3.3.0"}
TINY_DVAE = dict(hidden=8, blocks_per_group=1, num_codes=64, init_channels=8)
TINY_CLIP = dict(text=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4),
                 vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             image_size=32, patch_size=8),
                 projection_dim=16, merges=500)
TEXT_LENGTH = 77


def check_pins() -> None:
    found = {name: importlib.metadata.version(name).split("+")[0] for name in PINS}
    wrong = {name: version for name, version in found.items() if version != PINS[name]}
    if wrong:
        raise SystemExit(f"the fixtures are pinned to {PINS}; this environment has {wrong}")


def images(count: int, size: int, seed: int) -> np.ndarray:
    """uint8 `[count, size, size, 3]`: smooth colour ramps with noise, like photographs more than noise alone."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    out = []
    for _ in range(count):
        a, b, c = rng.uniform(0, 255, (3, 3))
        smooth = a * ramp[:, None, None] + b * ramp[None, :, None] + c * (1 - ramp[:, None, None])
        out.append(np.clip(smooth / 2 + rng.normal(0, 25, (size, size, 3)), 0, 255))
    return np.stack(out).astype(np.uint8)


def _jitter(module, seed: int, std: float = 0.1) -> None:
    """Random biases and LayerNorm parameters (released models have trained, non-trivial ones)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if parameter.ndim == 1 or name.endswith(".b") or "norm" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * std)


# -- the dVAE ----------------------------------------------------------------------------


def random_dvae(*, hidden=256, blocks_per_group=2, num_codes=8192, init_channels=128, seed=0):
    """The `dall_e` package's Encoder and Decoder with random weights (released sizes by default;
    smaller sizes than its validators allow for the fixtures)."""
    import attr
    import dall_e
    import torch

    torch.manual_seed(seed)
    with attr.validators.disabled():
        encoder = dall_e.Encoder(n_hid=hidden, n_blk_per_group=blocks_per_group, vocab_size=num_codes)
        decoder = dall_e.Decoder(n_init=init_channels, n_hid=hidden, n_blk_per_group=blocks_per_group,
                                 vocab_size=num_codes)
    _jitter(encoder, seed)
    _jitter(decoder, seed + 1)
    return encoder.eval(), decoder.eval()


def dvae_reference(encoder, decoder, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """What the released code computes for uint8 images (dall_e's usage notebook), NHWC."""
    import dall_e
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        logits = encoder(dall_e.map_pixels(x))
        codes = torch.argmax(logits, dim=1)
        one_hot = F.one_hot(codes, num_classes=encoder.vocab_size).permute(0, 3, 1, 2).float()
        stats = decoder(one_hot).float()
        decoded = dall_e.unmap_pixels(torch.sigmoid(stats[:, :3]))
    nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
    return {"logits": nhwc(logits), "codes": codes.numpy(), "stats": nhwc(stats), "pixels": nhwc(decoded)}


def state_dict(encoder, decoder) -> dict[str, np.ndarray]:
    return {f"{part}.{k}": v.numpy() for part, module in (("encoder", encoder), ("decoder", decoder))
            for k, v in module.state_dict().items()}


def write_dvae_fixture(out: pathlib.Path, seed: int = 0) -> pathlib.Path:
    encoder, decoder = random_dvae(**TINY_DVAE, seed=seed)
    pixels = images(2, 32, seed)
    reference = dvae_reference(encoder, decoder, pixels)
    path = out / "openai_dvae.npz"
    np.savez_compressed(path, settings=json.dumps(TINY_DVAE), images=pixels, **reference,
                        **{f"tensor/{k}": v for k, v in state_dict(encoder, decoder).items()})
    return path


# -- CLIP --------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of the 256 bytes to printable characters, in the order CLIP's vocabulary lists them."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    characters, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters)))


def write_clip_bpe(directory: pathlib.Path, merges_count: int | None = None) -> tuple[dict, list]:
    """`vocab.json` and `merges.txt` as OpenAI's CLIP builds them from its BPE file (the first
    `merges_count` merges; all 48,894 by default: the released 49,408-token vocabulary)."""
    spec = importlib.util.find_spec("open_clip")
    bpe = pathlib.Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1: 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in merges][:merges_count]
    tokens = list(_bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab, merges


def random_clip_snapshot(directory: pathlib.Path, *, text: dict | None = None, vision: dict | None = None,
                         projection_dim: int = 512, merges: int | None = None, seed: int = 0) -> pathlib.Path:
    """A `transformers` CLIP snapshot with random weights: config.json, model.safetensors,
    tokenizer.json, preprocessor_config.json (ViT-B/32 sizes unless `text` / `vision` say)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    bpe_dir = directory.with_name(directory.name + "_bpe")
    vocab, merge_list = write_clip_bpe(bpe_dir, merges)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merge_list)
    text_config = dict(text or {}, vocab_size=len(vocab), max_position_embeddings=TEXT_LENGTH,
                       bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                       pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision or {}, projection_dim=projection_dim))
    _jitter(model, seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    size = model.config.vision_config.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        directory)
    return directory


def clip_reference(snapshot: pathlib.Path, seed: int = 0) -> dict[str, np.ndarray]:
    """`transformers`' outputs for a snapshot: token ids of AWKWARD_TEXTS, pixel values and
    embeddings of test images, and its preprocessing of larger and smaller images."""
    import torch
    from PIL import Image
    from transformers import AutoTokenizer, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(snapshot)
    processor = CLIPImageProcessorPil.from_pretrained(snapshot)
    model = CLIPModel.from_pretrained(snapshot).eval()
    size = model.config.vision_config.image_size
    tokens = tokenizer(AWKWARD_TEXTS, padding="max_length", truncation=True, max_length=TEXT_LENGTH,
                       return_tensors="pt")
    pixels = images(3, size, seed)
    pixel_values = processor([Image.fromarray(p) for p in pixels], do_resize=False, do_center_crop=False,
                             return_tensors="pt").pixel_values
    with torch.no_grad():
        out = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixel_values)
    reference = {"token_ids": tokens.input_ids.numpy(), "images": pixels, "pixel_values": pixel_values.numpy(),
                 "image_embeds": out.image_embeds.numpy(), "text_embeds": out.text_embeds.numpy(),
                 "logits_per_image": out.logits_per_image.numpy()}
    for other in (2 * size, size * 5 // 8):  # shrunk and enlarged by CLIP's bicubic resize
        image = images(1, other, seed + other)
        reference[f"resize_{other}_images"] = image
        reference[f"resize_{other}_pixel_values"] = processor(Image.fromarray(image[0]),
                                                              return_tensors="pt").pixel_values.numpy()
    return reference


def write_clip_fixture(out: pathlib.Path, seed: int = 0) -> pathlib.Path:
    snapshot = out / "clip_snapshot"
    shutil.rmtree(snapshot, ignore_errors=True)
    random_clip_snapshot(snapshot, text=TINY_CLIP["text"], vision=TINY_CLIP["vision"],
                         projection_dim=TINY_CLIP["projection_dim"], merges=TINY_CLIP["merges"], seed=seed)
    np.savez_compressed(out / "clip_reference.npz", **clip_reference(snapshot, seed))
    return snapshot


# -- Karlo (diffusers' unCLIP) -------------------------------------------------------------

# Karlo's architecture at toy sizes: the released configs' block types, scale-shift and class embedding,
# fewer and narrower levels (scripts/convert_kakao_brain_unclip_to_diffusers.py in diffusers has the real ones).
TINY_KARLO = dict(
    text_encoder=dict(hidden_size=32, projection_dim=32, intermediate_size=37, num_attention_heads=4,
                      num_hidden_layers=2),
    image_encoder=dict(hidden_size=24, projection_dim=32, intermediate_size=40, num_attention_heads=4,
                       num_hidden_layers=2, image_size=32, patch_size=8),
    prior=dict(num_attention_heads=2, attention_head_dim=12, embedding_dim=32, num_layers=2),
    text_proj=dict(clip_extra_context_tokens=4, clip_embeddings_dim=32, time_embed_dim=32, cross_attention_dim=40),
    decoder=dict(sample_size=16, layers_per_block=2, in_channels=3, out_channels=6, block_out_channels=(8, 16, 16),
                 down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D",
                                   "SimpleCrossAttnDownBlock2D"),
                 up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
                 mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=40, class_embed_type="identity",
                 attention_head_dim=8, resnet_time_scale_shift="scale_shift", norm_num_groups=8),
    super_res=dict(sample_size=32, layers_per_block=2, in_channels=6, out_channels=3, block_out_channels=(8, 16),
                   down_block_types=("ResnetDownsampleBlock2D",) * 2, up_block_types=("ResnetUpsampleBlock2D",) * 2,
                   add_attention=False, norm_num_groups=8),
    merges=500,
)
KARLO_PROMPTS = ["a red boat on a lake", "an astronaut riding a horse, in the style of a 1920s poster"]


def _randomize(module, seed: int) -> None:
    """Every parameter made non-trivial: zero-initialised ones (positional embeddings, the prior's
    query, CLIP statistics, the null image embedding) drawn at random, biases and norms jittered; the
    prior's `clip_std` kept positive."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
            if name == "clip_std":
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
    _jitter(module, seed)


def random_karlo_snapshot(directory: pathlib.Path, sizes: dict, seed: int = 0) -> pathlib.Path:
    """Karlo's diffusers layout (`UnCLIPPipeline.save_pretrained`) with random weights: prior,
    text_proj, decoder, super_res_first, super_res_last, text_encoder, tokenizer and the three
    schedulers as Karlo's conversion script configures them; plus what the image-variation
    snapshot adds, image_encoder and feature_extractor."""
    import torch
    from diffusers import PriorTransformer, UnCLIPPipeline, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    bpe_dir = directory.with_name(directory.name + "_bpe")
    vocab, merge_list = write_clip_bpe(bpe_dir, sizes["merges"])
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merge_list, model_max_length=TEXT_LENGTH)
    shutil.rmtree(bpe_dir)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        **sizes["text_encoder"], vocab_size=len(vocab), max_position_embeddings=TEXT_LENGTH,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"]))
    components = dict(prior=PriorTransformer(**sizes["prior"]), text_proj=UnCLIPTextProjModel(**sizes["text_proj"]),
                      decoder=UNet2DConditionModel(**sizes["decoder"]), super_res_first=UNet2DModel(**sizes["super_res"]),
                      super_res_last=UNet2DModel(**sizes["super_res"]), text_encoder=text_encoder)
    for i, module in enumerate(components.values()):
        _randomize(module, seed + i)
    pipeline = UnCLIPPipeline(
        **components, tokenizer=tokenizer,
        prior_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                        num_train_timesteps=1000, clip_sample_range=5.0),
        decoder_scheduler=UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon",
                                          num_train_timesteps=1000),
        super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon",
                                            num_train_timesteps=1000))
    pipeline.save_pretrained(directory)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**sizes["image_encoder"]))
    _randomize(image_encoder, seed + len(components))
    image_encoder.save_pretrained(directory / "image_encoder")
    size = sizes["image_encoder"]["image_size"]
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        directory / "feature_extractor")
    return directory


def load_karlo_pipeline(snapshot: pathlib.Path):
    """diffusers' `UnCLIPPipeline` of a snapshot, component by component (diffusers 0.42 cannot
    resolve the text projection that its own `save_pretrained` declares in model_index.json)."""
    import diffusers
    import transformers
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    index = json.loads((snapshot / "model_index.json").read_text())
    classes = {"UnCLIPTextProjModel": UnCLIPTextProjModel}
    components = {}
    for name, (library, class_name) in ((k, v) for k, v in index.items() if not k.startswith("_")):
        cls = classes.get(class_name) or getattr(transformers if library == "transformers" else diffusers, class_name)
        components[name] = cls.from_pretrained(snapshot / name)
    return diffusers.UnCLIPPipeline(**components)


def karlo_reference(snapshot: pathlib.Path, prompts=KARLO_PROMPTS, seed: int = 0,
                    steps: tuple[int, int, int] = (25, 25, 7)) -> dict[str, np.ndarray]:
    """diffusers' outputs for a Karlo snapshot: each component on given inputs, and the whole
    pipeline from recorded noise (the initial latents of each stage and every step's fresh noise,
    so that another sampler can replay it): the prior's image embeddings, the decoder's 64-px
    images (before the upsampler) and the final images, all in [-1, 1] or as diffusers returns them."""
    import torch
    import torch.nn.functional
    from diffusers.schedulers import scheduling_unclip

    pipeline = load_karlo_pipeline(snapshot)
    pipeline.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    batch, tokens = len(prompts), pipeline.tokenizer(
        prompts + [""], padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt")
    reference = {"token_ids": tokens.input_ids.numpy(), "text_mask": tokens.attention_mask.numpy().astype(bool)}
    with torch.no_grad():
        text = pipeline.text_encoder(tokens.input_ids)
        reference.update(text_embeds=text.text_embeds.numpy(), text_hidden=text.last_hidden_state.numpy())
        prior, embedding_dim = pipeline.prior, pipeline.prior.config.embedding_dim
        inputs = dict(prior_latents=normal(batch, embedding_dim), prior_timesteps=np.array([999, 500, 0][:batch]))
        reference.update(inputs)
        reference["prior_output"] = prior(
            torch.from_numpy(inputs["prior_latents"]), timestep=torch.from_numpy(inputs["prior_timesteps"]),
            proj_embedding=text.text_embeds[:batch], encoder_hidden_states=text.last_hidden_state[:batch],
            attention_mask=tokens.attention_mask[:batch].bool()).predicted_image_embedding.numpy()
        image_embeddings = torch.from_numpy(normal(batch, embedding_dim))
        hidden, additive = pipeline.text_proj(image_embeddings=image_embeddings, prompt_embeds=text.text_embeds[:batch],
                                              text_encoder_hidden_states=text.last_hidden_state[:batch],
                                              do_classifier_free_guidance=False)
        reference.update(text_proj_image_embeddings=image_embeddings.numpy(), text_proj_context=hidden.numpy(),
                         text_proj_additive=additive.numpy())
        size = pipeline.decoder.config.sample_size
        decoder_inputs = dict(decoder_x=normal(batch, 3, size, size), decoder_t=np.array([999, 400][:batch]))
        context_mask = torch.nn.functional.pad(tokens.attention_mask[:batch].bool(), (4, 0), value=True)
        reference.update(decoder_inputs, decoder_context_mask=context_mask.numpy())
        reference["decoder_output"] = pipeline.decoder(
            torch.from_numpy(decoder_inputs["decoder_x"]), torch.from_numpy(decoder_inputs["decoder_t"]),
            encoder_hidden_states=hidden, class_labels=additive, attention_mask=context_mask).sample.numpy()
        size = pipeline.super_res_first.config.sample_size
        super_res_x = normal(batch, 6, size, size)
        reference.update(super_res_x=super_res_x, super_res_t=np.array([999, 0][:batch]))
        for name in ("super_res_first", "super_res_last"):
            reference[f"{name}_output"] = getattr(pipeline, name)(
                torch.from_numpy(super_res_x), torch.from_numpy(reference["super_res_t"])).sample.numpy()
        from transformers import CLIPVisionModelWithProjection
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
        from PIL import Image

        image_encoder = CLIPVisionModelWithProjection.from_pretrained(snapshot / "image_encoder").eval()
        processor = CLIPImageProcessorPil.from_pretrained(snapshot / "feature_extractor")
        size = image_encoder.config.image_size
        pixels = images(2, size, seed)
        values = processor([Image.fromarray(p) for p in pixels], return_tensors="pt").pixel_values
        reference.update(variation_images=pixels, variation_image_embeds=image_encoder(values).image_embeds.numpy())

    # The whole pipeline, every draw recorded.
    step_noise, drawn = [], scheduling_unclip.randn_tensor
    stage_inputs, interpolate = {}, torch.nn.functional.interpolate

    def recording_randn(*args, **kwargs):
        sample = drawn(*args, **kwargs)
        step_noise.append(sample.numpy().copy())
        return sample

    @functools.wraps(interpolate)  # the pipeline inspects its signature for `antialias`
    def recording_interpolate(image, *args, **kwargs):  # the UNets' resizes are nearest; the pipeline's is bicubic
        if kwargs.get("mode") == "bicubic":  # of the decoder's images
            stage_inputs["pipeline_decoder_images"] = image.numpy().copy()
        return interpolate(image, *args, **kwargs)

    post_process = pipeline.prior.post_process_latents
    def recording_post_process(latents):
        out = post_process(latents)
        stage_inputs["pipeline_image_embeddings"] = out.numpy().copy()
        return out

    small, large = pipeline.decoder.config.sample_size, pipeline.super_res_first.config.sample_size
    latents = dict(prior_latents=normal(batch, embedding_dim), decoder_latents=normal(batch, 3, small, small),
                   super_res_latents=normal(batch, 3, large, large))
    torch.manual_seed(seed)  # the per-step draws come from PyTorch's global generator
    scheduling_unclip.randn_tensor, torch.nn.functional.interpolate = recording_randn, recording_interpolate
    pipeline.prior.post_process_latents = recording_post_process
    try:
        final_images = pipeline(prompts, prior_num_inference_steps=steps[0], decoder_num_inference_steps=steps[1],
                          super_res_num_inference_steps=steps[2], output_type="np",
                          **{k: torch.from_numpy(v) for k, v in latents.items()}).images
    finally:
        scheduling_unclip.randn_tensor, torch.nn.functional.interpolate = drawn, interpolate
    prior_noise, decoder_noise, super_res_noise = (step_noise[:steps[0] - 1], step_noise[steps[0] - 1: sum(steps[:2]) - 2],
                                                   step_noise[sum(steps[:2]) - 2:])
    reference.update({f"pipeline_{k}": v for k, v in latents.items()}, **stage_inputs,
                     pipeline_steps=np.array(steps), pipeline_prior_noise=np.stack(prior_noise),
                     pipeline_decoder_noise=np.stack(decoder_noise), pipeline_super_res_noise=np.stack(super_res_noise),
                     pipeline_images=final_images)
    return reference


def write_karlo_fixture(out: pathlib.Path, seed: int = 0) -> pathlib.Path:
    snapshot = out / "karlo_snapshot"
    shutil.rmtree(snapshot, ignore_errors=True)
    random_karlo_snapshot(snapshot, TINY_KARLO, seed)
    np.savez_compressed(out / "karlo_reference.npz", prompts=json.dumps(KARLO_PROMPTS),
                        **karlo_reference(snapshot, KARLO_PROMPTS, seed))
    return snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=FIXTURES)
    args = parser.parse_args()
    check_pins()
    args.out.mkdir(parents=True, exist_ok=True)
    write_dvae_fixture(args.out)
    write_clip_fixture(args.out)
    write_karlo_fixture(args.out)
    (args.out / "VERSIONS.json").write_text(json.dumps(PINS, indent=2) + "\n")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out}: {total / 1024:.0f} KB")


if __name__ == "__main__":
    main()
