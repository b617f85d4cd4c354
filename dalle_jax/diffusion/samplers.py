"""Samplers from x_T ~ N(0, I) to x₀, each one `lax.scan` over any number of steps.

- `ddpm`: ancestral sampling from the posterior q(x_s | x_t, x̂₀) (Ho et al. 2020), on
  the respaced chain of the chosen timesteps (Nichol & Dhariwal 2021, section 4).
- `ddim`: Song et al. 2021, eq. 12, with η (η = 0 deterministic; η = 1 is DDPM again).
- `dpm_solver_pp`: DPM-Solver++(2M), Lu et al. 2022, Algorithm 2 (second-order multistep
  in the data prediction, first order on the first and the final step). η > 0 blends in
  SDE-DPM-Solver++(2M), the same multistep solver for the reverse SDE (η = 1; the midpoint
  form of k-diffusion's `sample_dpmpp_2m_sde` and diffusers' `sde-dpmsolver++`); its
  first-order step is the DDPM step.

Timesteps run `T-1 → 0` (`sampling_timesteps`); the final step goes from `t = 0` to the clean
sample (ᾱ = 1), so `num_steps` is also the number of model calls. A self-conditioned model
(`self_condition=True`) is given the previous step's x̂₀, zeros on the first. A model with a
learned variance (`learned_variance=True`, `ddpm` only; Nichol & Dhariwal 2021, eq. 15) outputs
twice the channels: the prediction, then `v` in [-1, 1], and DDPM's step has the log variance
`f log β + (1 - f) log β̃` with `f = (v + 1) / 2`, between the posterior's β̃ and β.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.diffusion.gaussian import ModelFn, check_prediction, to_x0_epsilon
from dalle_jax.diffusion.schedules import NoiseSchedule

SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp")
SPACINGS = ("uniform", "quadratic")


def sampling_timesteps(num_timesteps: int, num_steps: int, spacing: str = "uniform") -> np.ndarray:
    """`int32 [num_steps]`: distinct timesteps from `T-1` down to 0.

    `uniform` spaces them evenly, `round(i · (T-1) / (n-1))` for `i = n-1 .. 0` (computed as
    Karlo's and diffusers' UnCLIPScheduler do, so that halves round alike, to even); `quadratic`
    (Song et al. 2021, appendix D.2) spaces them as `(i / n)²`, denser near the data, which
    suits few-step solvers.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}] (the schedule's timesteps), got {num_steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"timestep spacing must be one of {SPACINGS}, got {spacing!r}")
    if spacing == "uniform" and num_steps > 1:
        ratio = (num_timesteps - 1) / (num_steps - 1)
        return np.round(np.arange(num_steps - 1, -1, -1) * ratio).astype(np.int32)
    fractions = np.linspace(1.0, 0.0, num_steps)
    timesteps = np.round((fractions if spacing == "uniform" else fractions ** 2) * (num_timesteps - 1)).astype(np.int32)
    for i in range(num_steps - 2, -1, -1):  # rounding may repeat a step near the data: keep them distinct
        timesteps[i] = max(timesteps[i], timesteps[i + 1] + 1)
    return timesteps


def model_output(model_fn: ModelFn, x, t, x0_estimate=None):
    """The model's float32 output at `x_t` for one scalar timestep `t` (and an estimate of x₀)."""
    extra = () if x0_estimate is None else (x0_estimate,)
    return model_fn(x, jnp.full((x.shape[0],), t, jnp.int32), *extra).astype(jnp.float32)


def denoise(model_fn: ModelFn, prediction: str, x, t, alpha_cumprod, *, clip_x0: bool = False,
            clip_range: float = 1.0, x0_estimate=None, output=None):
    """`(x̂₀, ε̂)` at `x_t` for one scalar timestep `t`. With `clip_x0`, x̂₀ is clipped to
    [-clip_range, clip_range] ([-1, 1]: pixels) and ε̂ recomputed to agree with it. A given
    `x0_estimate` is passed to the (self-conditioned) model; a given `output` is used instead
    of calling it."""
    alpha, sigma = jnp.sqrt(alpha_cumprod), jnp.sqrt(1.0 - alpha_cumprod)
    output = model_output(model_fn, x, t, x0_estimate) if output is None else output
    x0, epsilon = to_x0_epsilon(prediction, output, x, alpha, sigma)
    if clip_x0:
        x0 = jnp.clip(x0, -clip_range, clip_range)
        epsilon = (x - alpha * x0) / sigma
    return x0, epsilon


def _ddim_update(x, x0, epsilon, abar_t, abar_s, noise, eta):
    """x_s from x_t (s < t): Song et al. 2021, eq. 12."""
    sigma = eta * jnp.sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))
    direction = jnp.sqrt(jnp.maximum(1 - abar_s - sigma ** 2, 0.0))
    return jnp.sqrt(abar_s) * x0 + direction * epsilon + sigma * noise


def _ddpm_update(x, x0, abar_t, abar_s, noise, variance_fraction=None):
    """x_s ~ q(x_s | x_t, x̂₀), the Gaussian posterior of the respaced chain (Ho et al. eqs. 6–7);
    with `variance_fraction` f, the variance `exp(f log β + (1 - f) log β̃)` instead of β̃."""
    beta = 1 - abar_t / abar_s
    mean = (jnp.sqrt(abar_s) * beta * x0 + jnp.sqrt(1 - beta) * (1 - abar_s) * x) / (1 - abar_t)
    variance = beta * (1 - abar_s) / (1 - abar_t)  # β̃, 0 on the final step (ᾱ_s = 1)
    if variance_fraction is not None:
        log_variance = variance_fraction * jnp.log(beta) + (1 - variance_fraction) * jnp.log(jnp.maximum(variance, 1e-20))
        variance = jnp.where(abar_s < 1, jnp.exp(log_variance), 0.0)
    return mean + jnp.sqrt(variance) * noise


def _dpm_solver_pp_update(x, x0, previous_x0, previous_h, abar_t, abar_s, first_order, noise, eta):
    """DPM-Solver++(2M) step from t to s; returns (x_s, h). `h = λ_s - λ_t`, λ = log(α/σ).

    η scales the stochastic part: x_t's share decays by a further `e^{-ηh}`, and fresh noise
    restores the variance (`η = 0`: the ODE solver; `η = 1`: SDE-DPM-Solver++(2M)).
    """
    alpha_t, sigma_t = jnp.sqrt(abar_t), jnp.sqrt(1 - abar_t)
    alpha_s, sigma_s = jnp.sqrt(abar_s), jnp.sqrt(1 - abar_s)
    exp_neg_h = alpha_t * sigma_s / (sigma_t * alpha_s)  # 0 on the final step (σ_s = 0)
    h = -jnp.log(jnp.maximum(exp_neg_h, 1e-30))
    decay = exp_neg_h ** eta  # e^{-ηh}
    half_inverse_r = h / (2 * jnp.where(first_order, h, previous_h))  # 1 / (2 r), r = h_previous / h
    data = jnp.where(first_order, x0, (1 + half_inverse_r) * x0 - half_inverse_r * previous_x0)
    x_s = (sigma_s / sigma_t * decay * x + alpha_s * (1 - exp_neg_h * decay) * data
           + sigma_s * jnp.sqrt(1 - decay ** 2) * noise)
    return x_s, h


def sample(model_fn: ModelFn, schedule: NoiseSchedule, noise, rng, *, sampler: str, num_steps: int,
           prediction: str, eta: float = 0.0, clip_x0: bool = False, clip_range: float = 1.0,
           spacing: str = "uniform", self_condition: bool = False, step_noise=None,
           learned_variance: bool = False):
    """x₀ drawn from `x_T = noise` in `num_steps` model calls (one `lax.scan`).

    `rng` feeds the fresh noise of `ddpm`, and of `ddim` and `dpm_solver_pp` with η > 0;
    with η = 0 those two are deterministic given `noise`. `step_noise` (`[num_steps, *noise.shape]`)
    replaces those draws: step i adds `step_noise[i]` (the final step adds none), which replays
    another implementation's chain draw for draw.
    """
    check_prediction(prediction)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if learned_variance and sampler != "ddpm":
        raise ValueError(f"a learned variance is used by the ddpm sampler only, not {sampler!r}")
    timesteps = sampling_timesteps(schedule.num_timesteps, num_steps, spacing)
    abar = schedule.alphas_cumprod[timesteps]
    abar_next = jnp.concatenate([abar[1:], jnp.ones((1,), abar.dtype)])  # the final step reaches ᾱ = 1
    is_final = jnp.arange(num_steps) == num_steps - 1
    stochastic = sampler == "ddpm" or eta != 0  # else there is no noise to draw (η is static)

    def step(carry, inputs):
        x, previous_x0, previous_h = carry
        t, abar_t, abar_s, final, index, key, given = inputs
        output = model_output(model_fn, x, t, previous_x0 if self_condition else None)
        variance_fraction = None
        if learned_variance:
            output, v = jnp.split(output, 2, axis=-1)
            variance_fraction = (v + 1) / 2
        x0, epsilon = denoise(model_fn, prediction, x, t, abar_t, clip_x0=clip_x0, clip_range=clip_range, output=output)
        if not stochastic:
            fresh = jnp.zeros_like(x)
        else:
            fresh = jax.random.normal(key, x.shape, x.dtype) if step_noise is None else given.astype(x.dtype)
        h = previous_h
        if sampler == "ddpm":
            x = _ddpm_update(x, x0, abar_t, abar_s, fresh, variance_fraction)
        elif sampler == "ddim":
            x = _ddim_update(x, x0, epsilon, abar_t, abar_s, fresh, eta)
        else:
            x, h = _dpm_solver_pp_update(x, x0, previous_x0, previous_h, abar_t, abar_s, (index == 0) | final,
                                         fresh, eta)
        return (x, x0, h), None

    x = noise.astype(jnp.float32)
    keys = jax.random.split(rng, num_steps)
    if step_noise is not None and step_noise.shape != (num_steps, *noise.shape):
        raise ValueError(f"step_noise has shape {step_noise.shape}, not (num_steps, *noise.shape) = "
                         f"{(num_steps, *noise.shape)}")
    given = jnp.zeros((num_steps,), jnp.float32) if step_noise is None else jnp.asarray(step_noise)
    inputs = (jnp.asarray(timesteps), abar, abar_next, is_final, jnp.arange(num_steps), keys, given)
    (x, _, _), _ = jax.lax.scan(step, (x, jnp.zeros_like(x), jnp.ones((), jnp.float32)), inputs)
    return x


def ddim_invert(model_fn: ModelFn, schedule: NoiseSchedule, x0, *, num_steps: int, prediction: str,
                spacing: str = "uniform", self_condition: bool = False):
    """The x_T from which deterministic DDIM (η = 0, same `num_steps` and `spacing`)
    returns to `x0`: the DDIM update run forwards, starting from `x0` taken as x at `t = 0`.
    A self-conditioned model is given `x0` as its estimate throughout (sampling back, it sees
    its own; the inversion is then approximate)."""
    check_prediction(prediction)
    timesteps = sampling_timesteps(schedule.num_timesteps, num_steps, spacing)[::-1]  # ascending
    abar = schedule.alphas_cumprod[timesteps]
    x0 = x0.astype(jnp.float32)
    estimate = x0 if self_condition else None

    def step(x, inputs):
        t, abar_t, abar_next = inputs
        x_hat, epsilon = denoise(model_fn, prediction, x, t, abar_t, x0_estimate=estimate)
        return jnp.sqrt(abar_next) * x_hat + jnp.sqrt(1 - abar_next) * epsilon, None

    x, _ = jax.lax.scan(step, x0, (jnp.asarray(timesteps[:-1]), abar[:-1], abar[1:]))
    return x


def classifier_free_guidance(apply, condition, null_condition, scale, interval=None, *,
                             learned_variance: bool = False) -> ModelFn:
    """A `ModelFn` for `apply(x_t, t, condition)` guided as Ho & Salimans 2022:
    `out(∅) + scale · (out(c) - out(∅))`, both passes in one batched call.

    `condition` and `null_condition` are pytrees of `[batch, ...]` arrays (the null one is
    the dropped conditioning the model was trained with). `interval = (low, high)` guides
    only at timesteps `low ≤ t ≤ high` and returns `out(c)` elsewhere (Kynkäänniemi et al.
    2024: guidance at the highest noise levels costs diversity, at the lowest it does
    nothing); both passes are still made at every step. With `learned_variance`, the second
    half of the output's channels (the variance) is the conditional pass's, unguided.
    """

    def model_fn(x, t, *x0_estimate):  # a self-conditioned model's estimate, if any, is shared by both passes
        both = jax.tree.map(lambda c, n: jnp.concatenate([c, n]), condition, null_condition)
        output = apply(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both,
                       *(jnp.concatenate([e, e]) for e in x0_estimate))
        conditional, unconditional = jnp.split(output, 2)
        weight = jnp.full(t.shape, scale, jnp.float32)
        if interval is not None:
            weight = jnp.where((t >= interval[0]) & (t <= interval[1]), weight, 1.0)
        weight = weight.reshape(t.shape + (1,) * (x.ndim - 1)).astype(output.dtype)
        if learned_variance:
            (conditional, variance), (unconditional, _) = (jnp.split(y, 2, axis=-1) for y in (conditional, unconditional))
            return jnp.concatenate([unconditional + weight * (conditional - unconditional), variance], axis=-1)
        return unconditional + weight * (conditional - unconditional)

    return model_fn
