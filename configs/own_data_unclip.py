"""unCLIP (DALL·E 2) on your own images and captions: CLIP on 64×64, a 64×64 decoder and a 64 → 256 upsampler.

  C="--config configs/own_data_unclip.py --config.data.source=folder:photos --config.data.name=photos"
  C="$C --workdir workdir/photos_unclip"
  python run.py build-data           $C
  python run.py train-text-tokenizer $C
  python run.py train-clip           $C
  python run.py train-prior          $C
  python run.py train-decoder        $C
  python run.py train-upsampler      $C   # on 64×64 crops of the 256×256 images, a quarter as in the paper
  python run.py unclip-generate      $C --prompt "a red boat on a lake" --num-samples 4
  python run.py variations           $C --image my_photo.jpg --num-samples 4

The data settings are `own_data_dalle.py`'s (one data set serves both); the stages are `shapes_unclip.py`'s
recipes (v-prediction, logit-normal timesteps, guidance below 0.7 T, CLIP's best of 4) at these sizes.
Variants: `default`, `tiny` (the tests). DALL·E 3's captioner trains here in mode `alt` (your captions).
"""

import pathlib

from dalle_jax.config import config_from_file

HERE = pathlib.Path(__file__).parent


def get_config(variant: str = "default"):
    if variant not in ("default", "tiny"):
        raise ValueError(f"unknown variant {variant!r} of own_data_unclip.py; expected 'default' or 'tiny'")
    c = config_from_file(HERE / f"shapes_unclip.py:{variant}")
    own = config_from_file(HERE / f"own_data_dalle.py:{variant}")
    c.data = own.data
    c.text = own.text
    c.recaption = dict(chunk_size=2_048, batch_size=64)  # `recaption --mode alt` with the captioner section's model
    if variant == "tiny":  # shapes_unclip.py's tiny stages (CLIP on 16×16, 16 → 32) on own_data_dalle.py's tiny data
        c.recaption = dict(chunk_size=8, batch_size=4)
        c.captioner.model.num_prefix = 17  # one per CLIP output token: 4×4 patches of 16×16 and the class token
        return c
    # CLIP reads the images box-averaged to 64×64, as 8×8 patches.
    c.model.update(image_size=64, patch_size=8, patch_kernel=16, embed_dim=256, depth=6, num_heads=8, head_dim=32,
                   mlp_dim=1_024, projection_dim=256)
    c.train.update(steps=10_000, batch_size=64)
    c.eval.update(num_examples=256, num_prompts=64)
    c.decoder.image_size = 64
    c.decoder.model.update(base_channels=64, channel_mults=(1, 2, 3, 4), num_res_blocks=2,
                           attention_resolutions=(16, 8), num_heads=4, embed_dim=256, text_width=128, text_depth=2)
    c.decoder.train.update(steps=50_000, batch_size=32)
    c.upsampler.update(low_res_size=64, crop_size=64)
    c.upsampler.model.update(base_channels=32, channel_mults=(1, 2, 4), num_res_blocks=1, embed_dim=128)
    c.upsampler.train.update(steps=20_000, batch_size=16)
    c.prior.model.update(width=256, depth=6, num_heads=8, head_dim=32, mlp_dim=1_024)
    c.prior.train.update(steps=10_000)
    c.sample.batch_size = 16
    return c
