"""The diffusion library against closed forms: Gaussian data has an exact denoiser, so each
sampler must recover the data's mean and variance from it."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.diffusion import gaussian, samplers, schedules

MEAN = jnp.array([0.5, -1.0, 0.0, 2.0])
STD = jnp.array([0.3, 1.0, 0.1, 0.6])


def exact_denoiser(schedule, prediction):
    """The optimal model for data x₀ ~ N(MEAN, diag(STD²)): E[x₀ | x_t] in closed form."""

    def model_fn(x, t):
        alpha, sigma = (v[:, None] for v in schedule.alpha_sigma(t))
        x0 = MEAN + alpha * STD ** 2 / (alpha ** 2 * STD ** 2 + sigma ** 2) * (x - alpha * MEAN)
        epsilon = (x - alpha * x0) / sigma
        return {"x0": x0, "epsilon": epsilon, "v": alpha * epsilon - sigma * x0}[prediction]

    return model_fn


def test_schedules_match_their_definitions():
    linear = schedules.linear_alphas_cumprod(1000)
    np.testing.assert_allclose(1 - linear[0], 1e-4)
    np.testing.assert_allclose(linear[-1] / linear[-2], 1 - 0.02)
    cosine = schedules.cosine_alphas_cumprod(1000)
    f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(cosine[499], f(500) / f(0), rtol=1e-9)
    for abar in (linear, cosine):
        assert np.all(np.diff(abar) < 0) and 0 < abar[-1] < 0.01
    with pytest.raises(ValueError, match="noise schedule must be one of"):
        schedules.make_schedule("quadratic", 10)


def test_q_sample_moments_match_the_closed_form():
    schedule = schedules.make_schedule("cosine", 100)
    x0 = jnp.full((20_000, 1), 0.7)
    t = jnp.full((20_000,), 40)
    noise = jax.random.normal(jax.random.key(0), x0.shape)
    x_t = gaussian.q_sample(schedule, x0, t, noise)
    alpha, sigma = schedule.alpha_sigma(40)
    np.testing.assert_allclose(x_t.mean(), alpha * 0.7, atol=0.01)
    np.testing.assert_allclose(x_t.std(), sigma, rtol=0.02)


@pytest.mark.parametrize("prediction", gaussian.PREDICTIONS)
def test_each_parameterisation_round_trips(prediction):
    x0, noise = jax.random.normal(jax.random.key(1), (2, 8, 3))
    alpha, sigma = 0.6, 0.8
    x_t = alpha * x0 + sigma * noise
    target = gaussian.training_target(prediction, x0, noise, alpha, sigma)
    got_x0, got_noise = gaussian.to_x0_epsilon(prediction, target, x_t, alpha, sigma)
    chex.assert_trees_all_close((got_x0, got_noise), (x0, noise), atol=1e-5)


def test_the_exact_denoiser_has_the_lowest_loss():
    schedule = schedules.make_schedule("linear", 100)
    data = MEAN + STD * jax.random.normal(jax.random.key(2), (4096, 4))
    model = exact_denoiser(schedule, "epsilon")
    exact = gaussian.diffusion_loss(model, schedule, data, jax.random.key(3), "epsilon").mean()
    off = gaussian.diffusion_loss(lambda x, t: 1.05 * model(x, t), schedule, data, jax.random.key(3), "epsilon").mean()
    assert exact < off


def test_min_snr_weighting_is_the_same_loss_in_every_parameterisation():
    """Min-SNR-γ weights each parameterisation's error into min(SNR, γ)·|x̂₀ - x₀|², so one
    (imperfect) denoiser written as an ε-, x₀- or v-model has one weighted loss; with γ → ∞
    the ε-model's weight is 1."""
    schedule = schedules.make_schedule("cosine", 100)
    data = MEAN + STD * jax.random.normal(jax.random.key(2), (512, 4))
    exact_x0 = exact_denoiser(schedule, "x0")

    def model(prediction):
        def model_fn(x, t):
            alpha, sigma = (v[:, None] for v in schedule.alpha_sigma(t))
            x0 = 0.9 * exact_x0(x, t)
            epsilon = (x - alpha * x0) / sigma
            return {"x0": x0, "epsilon": epsilon, "v": alpha * epsilon - sigma * x0}[prediction]
        return model_fn

    loss = lambda prediction, gamma: gaussian.diffusion_loss(model(prediction), schedule, data, jax.random.key(3),
                                                             prediction, min_snr_gamma=gamma)
    weighted = {p: loss(p, 5.0) for p in gaussian.PREDICTIONS}
    chex.assert_shape(weighted["v"], (512,))
    np.testing.assert_allclose(weighted["epsilon"], weighted["x0"], rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(weighted["v"], weighted["x0"], rtol=2e-4, atol=1e-7)
    assert not np.allclose(loss("v", 0.0), loss("x0", 0.0), rtol=0.1)  # unweighted, they differ
    np.testing.assert_allclose(loss("epsilon", 1e12), loss("epsilon", 0.0), rtol=1e-5)


def test_logit_normal_timesteps_follow_their_distribution():
    uniform = np.asarray(gaussian.sample_timesteps(jax.random.key(0), 100_000, 1000))
    chex.assert_type(uniform, jnp.int32)
    assert uniform.min() == 0 and uniform.max() == 999
    np.testing.assert_allclose(np.mean(uniform < 250), 0.25, atol=0.01)
    t = np.asarray(gaussian.sample_timesteps(jax.random.key(0), 100_000, 1000, logit_normal_std=1.0))
    assert t.min() >= 0 and t.max() <= 999
    # P(T/4 <= t < 3T/4) = P(|n| < logit(3/4)) for n ~ N(0, 1): 2 Φ(log 3) - 1 = 0.7281.
    np.testing.assert_allclose(np.mean((t >= 250) & (t < 750)), 0.7281, atol=0.01)
    np.testing.assert_allclose(np.median(t), 500, atol=10)
    shifted = np.asarray(gaussian.sample_timesteps(jax.random.key(0), 100_000, 1000, 1.0, logit_normal_mean=0.5))
    # n ~ N(0.5, 1): the median is T·sigmoid(0.5) = 622.5, and P(t >= 3T/4) = 1 - Φ(log 3 - 0.5) = 0.2747.
    np.testing.assert_allclose(np.median(shifted), 622.5, atol=10)
    np.testing.assert_allclose(np.mean(shifted >= 750), 0.2747, atol=0.01)


def test_sampling_timesteps():
    steps = samplers.sampling_timesteps(1000, 20)
    assert steps[0] == 999 and steps[-1] == 0 and len(np.unique(steps)) == 20 and np.all(np.diff(steps) < 0)
    np.testing.assert_array_equal(samplers.sampling_timesteps(5, 5), [4, 3, 2, 1, 0])
    np.testing.assert_array_equal(samplers.sampling_timesteps(1000, 1), [999])
    # Karlo's (diffusers' UnCLIPScheduler) timesteps: round(i · 999 / (n - 1)), halves to even; 4 · 41.625 = 166.5
    assert 166 in samplers.sampling_timesteps(1000, 25) and 167 not in samplers.sampling_timesteps(1000, 25)
    np.testing.assert_array_equal(samplers.sampling_timesteps(1000, 7), [999, 832, 666, 500, 333, 166, 0])
    quadratic = samplers.sampling_timesteps(1000, 20, "quadratic")
    assert quadratic[0] == 999 and quadratic[-1] == 0 and quadratic[1] == round(999 * (18 / 19) ** 2)
    dense = samplers.sampling_timesteps(100, 90, "quadratic")  # rounding alone would repeat steps near 0
    assert len(np.unique(dense)) == 90 and dense[0] == 99 and np.all(np.diff(dense) < 0)
    with pytest.raises(ValueError, match="num_steps must be in"):
        samplers.sampling_timesteps(10, 11)


@pytest.mark.parametrize("sampler, num_steps, spacing, prediction, eta", [
    ("ddpm", 1000, "uniform", "epsilon", 0.0), ("ddpm", 100, "quadratic", "v", 0.0),
    ("ddim", 250, "uniform", "v", 0.0), ("ddim", 50, "quadratic", "epsilon", 0.0),
    ("dpm_solver_pp", 20, "quadratic", "x0", 0.0), ("dpm_solver_pp", 20, "quadratic", "epsilon", 0.0),
    ("dpm_solver_pp", 50, "quadratic", "v", 1.0)])
def test_sampler_recovers_a_gaussian(sampler, num_steps, spacing, prediction, eta):
    schedule = schedules.make_schedule("cosine", 1000)
    noise = jax.random.normal(jax.random.key(4), (8192, 4))
    run = jax.jit(lambda noise, key: samplers.sample(exact_denoiser(schedule, prediction), schedule, noise, key,
                                                     sampler=sampler, num_steps=num_steps, prediction=prediction,
                                                     spacing=spacing, eta=eta))
    x = run(noise, jax.random.key(5))
    chex.assert_shape(x, (8192, 4))
    np.testing.assert_allclose(x.mean(0), MEAN, atol=0.03)
    np.testing.assert_allclose(x.std(0), STD, rtol=0.05)


def test_ddpm_is_ddim_with_eta_one():
    schedule = schedules.make_schedule("linear", 200)
    noise = jax.random.normal(jax.random.key(6), (16, 4))
    model = exact_denoiser(schedule, "epsilon")
    draw = lambda sampler, eta: samplers.sample(model, schedule, noise, jax.random.key(7), sampler=sampler,
                                                num_steps=30, prediction="epsilon", eta=eta)
    np.testing.assert_allclose(draw("ddpm", 0.0), draw("ddim", 1.0), atol=1e-4)
    assert not np.allclose(draw("ddim", 0.0), draw("ddim", 1.0), atol=1e-2)


def test_stochastic_dpm_solver_pp_takes_ddpm_steps_at_first_order():
    """With η = 1 a first-order DPM-Solver++ step is the DDPM step; with 2 steps (the first and
    the final, both first order) the two samplers agree for any model, here a wrong one."""
    schedule = schedules.make_schedule("cosine", 1000)
    noise = jax.random.normal(jax.random.key(10), (16, 4))
    model = lambda x, t: jnp.sin(x) + 1e-3 * t[:, None]
    draw = lambda sampler, num_steps, eta: samplers.sample(model, schedule, noise, jax.random.key(11), sampler=sampler,
                                                           num_steps=num_steps, prediction="v", eta=eta)
    np.testing.assert_allclose(draw("dpm_solver_pp", 2, 1.0), draw("ddpm", 2, 0.0), atol=1e-5)
    assert not np.allclose(draw("dpm_solver_pp", 2, 0.0), draw("ddpm", 2, 0.0), atol=1e-2)
    assert not np.allclose(draw("dpm_solver_pp", 10, 1.0), draw("ddpm", 10, 0.0), atol=1e-3)  # second order


def test_ddim_inversion_reconstructs():
    schedule = schedules.make_schedule("cosine", 1000)
    model = exact_denoiser(schedule, "epsilon")
    x0 = MEAN + STD * jax.random.normal(jax.random.key(8), (64, 4))
    x_T = samplers.ddim_invert(model, schedule, x0, num_steps=250, prediction="epsilon")
    assert float(jnp.abs(x_T - x0).mean()) > 0.5  # it went far, and came back:
    back = samplers.sample(model, schedule, x_T, jax.random.key(9), sampler="ddim", num_steps=250,
                           prediction="epsilon", eta=0.0)
    np.testing.assert_allclose(back, x0, atol=0.04)  # DDIM is first order: the error halves as the steps double
    assert float(jnp.abs(back - x0).mean()) < 0.01


def test_guidance_mixes_one_batched_call():
    calls = []

    def apply(x, t, condition):
        calls.append(x.shape[0])
        return x * condition["scale"][:, None] + t[:, None]

    x, t = jnp.ones((3, 2)), jnp.arange(3)
    condition, null = {"scale": jnp.full((3,), 2.0)}, {"scale": jnp.full((3,), 0.5)}
    guided = lambda s: samplers.classifier_free_guidance(apply, condition, null, s)(x, t)
    chex.assert_trees_all_close(guided(1.0), apply(x, t, condition), atol=1e-6)
    chex.assert_trees_all_close(guided(0.0), apply(x, t, null), atol=1e-6)
    chex.assert_trees_all_close(guided(3.0), jnp.broadcast_to(0.5 + 3.0 * 1.5 + t[:, None], (3, 2)), atol=1e-6)
    assert calls[0] == 6  # both passes in one call


def test_guidance_interval_guides_only_inside_it():
    apply = lambda x, t, condition: x * condition[:, None]
    x, t = jnp.ones((5, 2)), jnp.array([0, 299, 300, 850, 851])
    condition, null = jnp.full((5,), 2.0), jnp.full((5,), 0.5)
    guided = samplers.classifier_free_guidance(apply, condition, null, 3.0, interval=(300, 850))(x, t)
    # inside [300, 850]: 0.5 + 3 · (2 - 0.5) = 5; outside: the conditional output, 2
    chex.assert_trees_all_close(guided[:, 0], jnp.array([2.0, 2.0, 5.0, 5.0, 2.0]), atol=1e-6)


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_self_conditioned_sampling_feeds_back_the_previous_estimate(sampler):
    # An x₀-model that answers its estimate plus one: step k sees k - 1 (zeros first) and says k,
    # and every sampler's final step returns the last x̂₀.
    model = lambda x, t, x0_estimate: x0_estimate + 1.0
    schedule = schedules.make_schedule("cosine", 100)
    run = lambda self_condition: samplers.sample(
        model if self_condition else (lambda x, t: model(x, t, jnp.zeros_like(x))), schedule, jnp.zeros((2, 3)),
        jax.random.key(0), sampler=sampler, num_steps=5, prediction="x0", eta=0.5, self_condition=self_condition)
    np.testing.assert_allclose(run(True), 5.0, rtol=1e-5)
    np.testing.assert_allclose(run(False), 1.0, rtol=1e-5)


def test_self_conditioning_estimate_is_the_models_own_half_the_time_and_a_constant():
    def model(p):
        return lambda x, t, x0_estimate: p * x + x0_estimate  # an x₀-prediction
    x, t = jax.random.normal(jax.random.key(0), (256, 3)), jnp.zeros(256, jnp.int32)
    alpha, sigma = jnp.full((256, 1), 0.6), jnp.full((256, 1), 0.8)
    estimate = gaussian.self_conditioning_estimate(model(2.0), "x0", x, t, alpha, sigma, jax.random.key(1))
    own = np.all(np.isclose(estimate, 2.0 * x, atol=1e-6), axis=1)
    none = np.all(estimate == 0.0, axis=1)
    assert np.all(own | none) and 0.4 < own.mean() < 0.6
    gradient = jax.grad(lambda p: gaussian.self_conditioning_estimate(
        model(p), "x0", x, t, alpha, sigma, jax.random.key(1)).sum())(2.0)
    assert float(gradient) == 0.0  # the estimate is an input, not a path for the gradient


def _ddpm_step_by_hand(x, output, v, t, s, abar, noise):
    """One DDPM step of an ε-model with a learned variance, written out as Nichol & Dhariwal's eq. 15
    (and Karlo's UnCLIPScheduler): x̂₀ clipped to [-1, 1], the posterior mean, log variance
    `f log β + (1 - f) log β̃` with f = (v + 1) / 2."""
    a_t, a_s = abar[t], (abar[s] if s >= 0 else 1.0)
    beta = 1 - a_t / a_s
    x0 = np.clip((x - np.sqrt(1 - a_t) * output) / np.sqrt(a_t), -1, 1)
    mean = np.sqrt(a_s) * beta / (1 - a_t) * x0 + np.sqrt(1 - beta) * (1 - a_s) / (1 - a_t) * x
    if s < 0:
        return mean
    fraction = (v + 1) / 2
    log_variance = fraction * np.log(beta) + (1 - fraction) * np.log((1 - a_s) / (1 - a_t) * beta)
    return mean + np.exp(0.5 * log_variance) * noise


def test_learned_variance_and_replayed_noise_follow_the_ddpm_step_by_hand():
    schedule = schedules.make_schedule("cosine", 1000)
    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    rng = np.random.default_rng(0)
    x_T, step_noise = rng.standard_normal((3, 5)), rng.standard_normal((4, 3, 5))
    model = lambda x, t: jnp.concatenate([jnp.sin(x) + 1e-3 * t[:, None], jnp.tanh(x) * 0.9], axis=-1)
    timesteps = samplers.sampling_timesteps(1000, 4)
    x = x_T
    for i, t in enumerate(timesteps):
        output = np.asarray(model(jnp.asarray(x, jnp.float32), jnp.full((3,), t)), np.float64)
        s = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x = _ddpm_step_by_hand(x, output[:, :5], output[:, 5:], t, s, abar, step_noise[i])
    draw = lambda noise: samplers.sample(model, schedule, jnp.asarray(x_T, jnp.float32), jax.random.key(0),
                                         sampler="ddpm", num_steps=4, prediction="epsilon", clip_x0=True,
                                         learned_variance=True, step_noise=noise)
    np.testing.assert_allclose(draw(jnp.asarray(step_noise, jnp.float32)), x, rtol=1e-4, atol=1e-5)
    assert not np.allclose(draw(None), x, atol=1e-2)  # without replayed noise, the key's own draws
    with pytest.raises(ValueError, match="step_noise has shape"):
        draw(jnp.zeros((3, 3, 5)))
    with pytest.raises(ValueError, match="ddpm sampler only"):
        samplers.sample(model, schedule, jnp.asarray(x_T), jax.random.key(0), sampler="ddim", num_steps=4,
                        prediction="epsilon", learned_variance=True)


def test_clip_range_bounds_x0():
    schedule = schedules.make_schedule("cosine", 1000)
    x0_model = lambda x, t: jnp.full_like(x, 7.0)  # an x₀-prediction far outside any range
    draw = lambda clip_range: samplers.sample(x0_model, schedule, jnp.zeros((2, 3)), jax.random.key(0),
                                              sampler="ddpm", num_steps=3, prediction="x0", clip_x0=True,
                                              clip_range=clip_range)
    np.testing.assert_allclose(draw(5.0), 5.0, rtol=1e-6)  # the final step returns the clipped x̂₀
    np.testing.assert_allclose(draw(1.0), 1.0, rtol=1e-6)


def test_guidance_leaves_a_learned_variance_unguided():
    apply = lambda x, t, condition: jnp.concatenate([x * condition[:, None], x + condition[:, None]], axis=-1)
    x, t = jnp.ones((2, 3)), jnp.zeros((2,), jnp.int32)
    condition, null = jnp.full((2,), 2.0), jnp.full((2,), 0.5)
    guided = samplers.classifier_free_guidance(apply, condition, null, 4.0, learned_variance=True)(x, t)
    chex.assert_trees_all_close(guided[:, :3], jnp.full((2, 3), 0.5 + 4.0 * 1.5))  # ε guided
    chex.assert_trees_all_close(guided[:, 3:], jnp.full((2, 3), 3.0))  # the variance: the conditional pass's
