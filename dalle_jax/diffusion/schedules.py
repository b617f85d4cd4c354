"""Noise schedules, as the cumulative product ᾱ_t of `1 - β_t` over `t = 0 .. T-1`.

A noised sample is `x_t = α_t x₀ + σ_t ε` with `α_t = sqrt(ᾱ_t)`, `σ_t = sqrt(1 - ᾱ_t)`.
"""

from __future__ import annotations

import flax.struct
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine")


def linear_alphas_cumprod(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. 2020: β linear from `beta_start` to `beta_end`, rescaled so that any `T`
    spans the same noise levels as the paper's `T = 1000`."""
    scale = 1000 / num_timesteps
    betas = np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def cosine_alphas_cumprod(num_timesteps: int, offset: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17: ᾱ_t = f(t) / f(0), f(t) = cos²((t/T + s) / (1 + s) · π/2),
    with each β clipped at `max_beta` so that the last steps stay invertible."""
    f = lambda t: np.cos((t / num_timesteps + offset) / (1 + offset) * np.pi / 2) ** 2
    steps = np.arange(num_timesteps + 1, dtype=np.float64)
    betas = np.minimum(1.0 - f(steps[1:]) / f(steps[:-1]), max_beta)
    return np.cumprod(1.0 - betas)


@flax.struct.dataclass
class NoiseSchedule:
    """ᾱ_t for `t = 0 .. T-1` (`float32 [T]`); index it with integer timesteps."""

    alphas_cumprod: jnp.ndarray

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def alpha_sigma(self, t):
        """(α_t, σ_t) for integer timesteps `t` (any shape)."""
        alphas_cumprod = self.alphas_cumprod[t]
        return jnp.sqrt(alphas_cumprod), jnp.sqrt(1.0 - alphas_cumprod)


def make_schedule(kind: str, num_timesteps: int) -> NoiseSchedule:
    if kind == "linear":
        alphas_cumprod = linear_alphas_cumprod(num_timesteps)
    elif kind == "cosine":
        alphas_cumprod = cosine_alphas_cumprod(num_timesteps)
    else:
        raise ValueError(f"noise schedule must be one of {SCHEDULES}, got {kind!r}")
    return NoiseSchedule(jnp.asarray(alphas_cumprod, jnp.float32))
