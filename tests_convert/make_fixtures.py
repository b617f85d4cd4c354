"""Writes the parity fixtures in tests/weights/fixtures/ from the PyTorch originals; the live
tests beside this file run the same functions at the released sizes.

Pinned (checked at start): torch 2.13.0 (CPU), transformers 5.24.0, DALL-E 0.1, tokenizers
0.23.3; CLIP's BPE merges come from open_clip_torch 3.3.0 (its bpe_simple_vocab_16e6.txt.gz,
the file OpenAI's CLIP ships). `make parity-fixtures` installs them in .venv-convert and runs:

  python tests_convert/make_fixtures.py [--out tests/weights/fixtures]

Every model has random weights (biases and LayerNorm parameters too, so that their mapping is
tested) from a fixed seed; nothing is downloaded.
"""

from __future__ import annotations

import argparse
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

PINS = {"torch": "2.13.0", "transformers": "5.24.0", "DALL-E": "0.1", "tokenizers": "0.23.3",
        "open_clip_torch": "3.3.0"}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=FIXTURES)
    args = parser.parse_args()
    check_pins()
    args.out.mkdir(parents=True, exist_ok=True)
    write_dvae_fixture(args.out)
    write_clip_fixture(args.out)
    (args.out / "VERSIONS.json").write_text(json.dumps(PINS, indent=2) + "\n")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out}: {total / 1024:.0f} KB")


if __name__ == "__main__":
    main()
