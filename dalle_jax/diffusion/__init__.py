"""Gaussian diffusion: noise schedules, the forward process and its losses, samplers, guidance.

Everything here is model-agnostic: a model is a function `model_fn(x_t, t) -> output`
whose output is read as an ε-, x₀- or v-prediction (`gaussian.PREDICTIONS`).
"""
