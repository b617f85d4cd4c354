"""The forward process q(x_t | x₀), the three parameterisations of a denoiser, and the loss.

A model's output is an ε-prediction, an x₀-prediction, or a v-prediction
(`v = α_t ε - σ_t x₀`, Salimans & Ho 2022). Each converts to the pair `(x₀, ε)` given
`x_t`, which is all a sampler needs.

A self-conditioned model (Chen et al. 2022, "Analog Bits", section 3.2) also reads an
estimate of x₀: `model_fn(x_t, t, x0_estimate)`, zeros where it has none. In training it
gets, half the time, its own estimate from a first pass (no gradient through it); in
sampling, the x̂₀ of the previous step.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dalle_jax.diffusion.schedules import NoiseSchedule

PREDICTIONS = ("epsilon", "x0", "v")
ModelFn = Callable[..., jax.Array]  # (x_t [batch, ...], t int32 [batch][, x0_estimate like x_t]) -> output like x_t


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def _per_example(values, like):
    """`[batch]` values shaped to broadcast against `like [batch, ...]`."""
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def q_sample(schedule: NoiseSchedule, x0, t, noise):
    """`x_t = α_t x₀ + σ_t ε`, with `t` an int32 `[batch]`."""
    alpha, sigma = schedule.alpha_sigma(t)
    return _per_example(alpha, x0) * x0 + _per_example(sigma, x0) * noise


def to_x0_epsilon(prediction: str, output, x_t, alpha, sigma):
    """`(x₀, ε)` implied by a model output at `x_t`; `alpha`, `sigma` broadcast against `x_t`."""
    if prediction == "epsilon":
        return (x_t - sigma * output) / alpha, output
    if prediction == "x0":
        return output, (x_t - alpha * output) / sigma
    if prediction == "v":  # α² + σ² = 1
        return alpha * x_t - sigma * output, sigma * x_t + alpha * output
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def training_target(prediction: str, x0, noise, alpha, sigma):
    """What a model with this parameterisation should output for `x_t = α x₀ + σ ε`."""
    if prediction == "epsilon":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return alpha * noise - sigma * x0
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def min_snr_weight(prediction: str, alpha, sigma, gamma: float):
    """Min-SNR-γ (Hang et al. 2023): the weight that turns this parameterisation's squared
    error into `min(SNR, γ) · |x̂₀ - x₀|²`, SNR = α²/σ². The x₀-error is the ε-error over
    SNR and the v-error over SNR + 1."""
    check_prediction(prediction)
    snr = jnp.square(alpha / sigma)
    clipped = jnp.minimum(snr, gamma)
    return {"x0": clipped, "epsilon": clipped / snr, "v": clipped / (snr + 1)}[prediction]


def sample_timesteps(rng, batch: int, num_timesteps: int, logit_normal_std: float = 0.0,
                     logit_normal_mean: float = 0.0):
    """`int32 [batch]` training timesteps in `[0, num_timesteps)`: uniform, or with
    `logit_normal_std > 0` logit-normal, `t / T = sigmoid(n)` with `n ~ N(mean, std²)` (Esser
    et al. 2024, section 3.1), which draws the middle of the schedule more often than its ends
    (at mean 0 and std 1, 73% of draws lie in the middle half); a mean above 0 moves the mode
    towards the noise (median `T · sigmoid(mean)`)."""
    if not logit_normal_std:
        return jax.random.randint(rng, (batch,), 0, num_timesteps)
    fraction = jax.nn.sigmoid(logit_normal_mean + logit_normal_std * jax.random.normal(rng, (batch,)))
    return jnp.minimum((fraction * num_timesteps).astype(jnp.int32), num_timesteps - 1)


def self_conditioning_estimate(model_fn: ModelFn, prediction: str, x_t, t, alpha, sigma, rng):
    """The `x0_estimate` a self-conditioned model trains with: per example, with probability
    1/2 its own x̂₀ from a pass given zeros (a constant: no gradient flows through it), else
    zeros. `alpha`, `sigma` broadcast against `x_t`."""
    zeros = jnp.zeros_like(x_t)
    first = model_fn(x_t, t, zeros).astype(jnp.float32)
    estimate = jax.lax.stop_gradient(to_x0_epsilon(prediction, first, x_t, alpha, sigma)[0])
    use = jax.random.bernoulli(rng, 0.5, t.shape)
    return jnp.where(_per_example(use, x_t), estimate, zeros)


def diffusion_loss(model_fn: ModelFn, schedule: NoiseSchedule, x0, rng, prediction: str, min_snr_gamma: float = 0.0,
                   logit_normal_std: float = 0.0, logit_normal_mean: float = 0.0, self_condition: bool = False):
    """Per-example mean squared error `[batch]` of the model at a uniformly drawn timestep
    (the "simple" loss of Ho et al. 2020, for any parameterisation); with `min_snr_gamma > 0`,
    weighted by `min_snr_weight`; with `logit_normal_std > 0`, at a logit-normal timestep
    (`sample_timesteps`) of that std and `logit_normal_mean`. With `self_condition`, the
    model is self-conditioned (`self_conditioning_estimate`; a second forward pass)."""
    t_key, noise_key = jax.random.split(rng)
    t = sample_timesteps(t_key, x0.shape[0], schedule.num_timesteps, logit_normal_std, logit_normal_mean)
    noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
    alpha, sigma = schedule.alpha_sigma(t)
    a, s = _per_example(alpha, x0), _per_example(sigma, x0)
    x_t = a * x0 + s * noise
    if self_condition:
        estimate = self_conditioning_estimate(model_fn, prediction, x_t, t, a, s, jax.random.fold_in(rng, 2))
        output = model_fn(x_t, t, estimate)
    else:
        output = model_fn(x_t, t)
    target = training_target(prediction, x0, noise, a, s)
    loss = jnp.mean(jnp.square(output.astype(jnp.float32) - target), axis=tuple(range(1, x0.ndim)))
    return loss * min_snr_weight(prediction, alpha, sigma, min_snr_gamma) if min_snr_gamma else loss
