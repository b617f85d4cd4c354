"""Pixel conversions shared by the image models."""

import jax.numpy as jnp


def to_unit_range(images):
    """`uint8` [0, 255] to `float32` [-1, 1]."""
    return images.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images):
    """`float` [-1, 1] to `uint8` [0, 255]."""
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def block_resize(images, size: int):
    """`[batch, H, H, C]` to `[batch, size, size, C]`: box-averaged when larger (`box_downsample`),
    each pixel repeated `size / H` times a side when smaller; `size` and `H` must divide one another."""
    height = images.shape[1]
    if height >= size:
        return box_downsample(images, size)
    factor = size // height
    if factor * height != size or images.shape[2] != height:
        raise ValueError(f"cannot repeat the pixels of {height}×{images.shape[2]} images up to {size}×{size}: "
                         f"need square images whose side divides {size}")
    return jnp.repeat(jnp.repeat(images, factor, axis=1), factor, axis=2)


def psnr(reconstruction, images):
    """Peak signal-to-noise ratio in dB of `[-1, 1]` reconstructions against `uint8` images."""
    mse = jnp.mean(((reconstruction + 1.0) / 2.0 - images.astype(jnp.float32) / 255.0) ** 2)
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def box_downsample(images, size: int):
    """`[batch, H, W, C]` to `[batch, size, size, C]` by averaging `H / size` square blocks."""
    batch, height, width, channels = images.shape
    factor = height // size
    if height != width or factor * size != height:
        raise ValueError(f"cannot box-downsample {height}×{width} images to {size}×{size}: "
                         f"need square images whose side is a multiple of {size}")
    if factor == 1:
        return images  # already that size: every upsampler stage's preprocessing passes through here
    return images.reshape(batch, size, factor, size, factor, channels).mean(axis=(2, 4))
