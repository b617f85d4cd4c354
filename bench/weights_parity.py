"""Imported weights against the PyTorch originals at the released sizes, and what importing costs.

  make test-convert                                # builds .venv-convert (PyTorch, dall_e, transformers)
  .venv-convert/bin/python bench/weights_parity.py

OpenAI's dall_e Encoder and Decoder at their released sizes and a ViT-B/32-sized
`transformers.CLIPModel` with the real 49,408-token vocabulary get random weights (biases and
LayerNorm parameters too), are saved in the released layouts (the dVAE's pickles; a
transformers snapshot in safetensors) and imported with `run.py import-weights`. Prints JSON:
the largest difference relative to the largest reference value of the dVAE's logits, decoder
statistics and pixels and of CLIP's embeddings and logits; the share of equal codes and of
equal token-id rows (AWKWARD_TEXTS); CLIP's bicubic resize against Pillow's in 1/255ths; the
files' sizes and each import's wall time. tests_convert/test_live_parity.py asserts on these.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests_convert")]

import make_fixtures  # noqa: E402
from tests.weights import parity  # noqa: E402

PAPER = "configs/own_data_dalle.py:paper"


def import_weights(kind: str, source: pathlib.Path, workdir: pathlib.Path) -> float:
    """`run.py import-weights` as a user runs it; its wall time in seconds."""
    tick = time.perf_counter()
    result = subprocess.run([sys.executable, str(REPO / "run.py"), "import-weights", "--config", PAPER, "--kind", kind,
                             "--source", str(source), "--workdir", str(workdir)], capture_output=True, text=True,
                            cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=1800)
    if result.returncode:
        raise RuntimeError(f"import-weights --kind {kind} failed:\n{result.stderr[-3000:]}")
    return round(time.perf_counter() - tick, 1)


def _megabytes(*paths: pathlib.Path) -> float:
    return round(sum(p.stat().st_size for p in paths) / 2 ** 20, 1)


def dvae(directory: pathlib.Path, seed: int = 1) -> dict:
    """The released-size dVAE from its pickles, on four 256-px images."""
    import torch

    from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask
    from dalle_jax.train import trainer

    encoder, decoder = make_fixtures.random_dvae(seed=seed)
    weights = directory / "dall_e_weights"
    weights.mkdir(parents=True)
    torch.save(encoder, weights / "encoder.pkl")
    torch.save(decoder, weights / "decoder.pkl")
    result = {"import_seconds": import_weights("openai-dvae", weights, directory / "run"),
              "pickles_mb": _megabytes(*weights.iterdir())}
    images = make_fixtures.images(4, 256, seed)
    reference = make_fixtures.dvae_reference(encoder, decoder, images)
    run_dir = directory / "run" / "image_tokenizer"
    config = trainer.run_config(run_dir)
    params = trainer.load_variables(config, run_dir, ImageTokenizerTask.from_config(config))["params"]
    ours = parity.dvae_outputs(params, config.image_tokenizer, images)
    result |= {name: parity.relative_error(ours[name], reference[name]) for name in ("logits", "stats", "pixels")}
    result["codes_equal"] = float(np.mean(ours["codes"] == reference["codes"]))
    result["codes_shape"] = list(ours["codes"].shape)
    return result


def clip(directory: pathlib.Path, seed: int = 2) -> dict:
    """A ViT-B/32-sized CLIP from a transformers snapshot."""
    from dalle_jax.tasks.clip import TrainedClip

    snapshot = make_fixtures.random_clip_snapshot(directory / "clip-vit-base-patch32", seed=seed)
    reference = make_fixtures.clip_reference(snapshot, seed)
    result = {"import_seconds": import_weights("hf-clip", snapshot, directory / "run"),
              "safetensors_mb": _megabytes(snapshot / "model.safetensors")}
    trained_clip = TrainedClip.load(directory / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 207-word caption is truncated, as CLIP's own tokenizer does
        ids = trained_clip.task.text_tokenizer.encode(parity.AWKWARD_TEXTS, 77)
    result["token_rows_equal"] = float(np.mean(np.all(ids == reference["token_ids"], axis=1)))
    ours = parity.clip_outputs(trained_clip, reference["images"], reference["token_ids"])
    result |= {name: parity.relative_error(ours[name], reference[name])
               for name in ("image_embeds", "text_embeds", "logits_per_image")}
    vision = trained_clip.model.vision
    std = np.asarray(vision.pixel_std)[None, :, None, None]
    for size in (448, 140):  # shrunk to 224, enlarged to 224
        pixels = parity.clip_pixels(reference[f"resize_{size}_images"], 224, vision.pixel_mean, vision.pixel_std)
        error = np.abs(pixels - reference[f"resize_{size}_pixel_values"]) * std * 255
        result[f"resize_{size}_pixel_error_255ths"] = {"mean": round(float(error.mean()), 3),
                                                        "max": round(float(error.max()), 2)}
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = {"rtol": parity.RTOL, "dvae": dvae(pathlib.Path(tmp) / "dvae"),
                  "clip_vit_b32": clip(pathlib.Path(tmp) / "clip")}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
