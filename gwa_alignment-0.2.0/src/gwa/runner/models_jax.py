"""Flax twins of the torch experiment models (:mod:`gwa.runner.models`): MLP and small CNN.

Same layers, widths, kernel sizes and pooling as the torch models, and torch's default initialisation
distribution (weights and biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``), so a JAX run of a config trains the
same function class from the same kind of start as the torch run; the drawn values differ (another RNG).
Inputs are channels-last, as :mod:`gwa.runner.data` stores them. Each model sows its head's input
under :data:`gwa.jax.SOWN_NAME` and ends in a ``Dense`` named ``head``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

import jax
from gwa.jax import SOWN_NAME

#: Models this backend builds; the others (resnet, timm:...) need BatchNorm or timm, i.e. the torch backend.
JAX_MODELS = ("mlp", "cnn")

# torch's nn.Linear / nn.Conv default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _dense(features: int, fan_in: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=_torch_kernel_init, bias_init=_torch_bias_init(fan_in), name=name)


class MLP(nn.Module):
    hidden: tuple[int, ...]
    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = nn.relu(_dense(width, x.shape[-1], f"body_{i}")(x))
        self.sow("intermediates", SOWN_NAME, x)
        return _dense(self.num_classes, x.shape[-1], "head")(x)


class SmallCNN(nn.Module):
    """Three conv blocks (width, 2x, 2x; max-pool after the first two) and global average pooling."""

    num_classes: int
    width: int = 32
    dims: int = 2

    @nn.compact
    def __call__(self, x):
        if self.dims == 1 and x.ndim == 2:
            x = x[..., None]  # (B, L) -> (B, L, 1)
        k = 5 if self.dims == 1 else 3
        window = (2,) * self.dims
        for i, channels in enumerate((self.width, 2 * self.width, 2 * self.width)):
            fan_in = x.shape[-1] * k**self.dims
            x = nn.Conv(
                channels,
                (k,) * self.dims,
                padding="SAME",
                kernel_init=_torch_kernel_init,
                bias_init=_torch_bias_init(fan_in),
                name=f"conv_{i}",
            )(x)
            x = nn.relu(x)
            if i < 2:
                x = nn.max_pool(x, window, strides=window, padding="VALID")
        x = x.mean(axis=tuple(range(1, 1 + self.dims)))
        self.sow("intermediates", SOWN_NAME, x)
        return _dense(self.num_classes, x.shape[-1], "head")(x)


def init_params(model: nn.Module, input_shape: tuple[int, ...], seed: int) -> dict:
    """Parameters drawn on the host like torch's defaults: every kernel and bias ``U(-1/sqrt(fan_in), ..)``.

    Shapes come from ``jax.eval_shape`` (nothing is compiled); values from ``numpy.random.default_rng(seed)`` in
    the parameter tree's order, so they are the same on every platform. (Compiling jax's threefry initialisers
    for a small CNN costs seconds of CPU; this costs nothing.)
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *input_shape), jnp.float32))[
        "params"
    ]
    rng = np.random.default_rng(seed)

    def draw(layer):
        bound = 1.0 / math.sqrt(math.prod(layer["kernel"].shape[:-1]))
        return {
            k: jnp.asarray(rng.uniform(-bound, bound, v.shape).astype(np.float32)) for k, v in layer.items()
        }

    return jax.tree.map(draw, shapes, is_leaf=lambda t: isinstance(t, dict) and "kernel" in t)


def build_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, hidden=(256, 256), width: int = 32
) -> nn.Module:
    """The Flax model for inputs of ``input_shape`` (``(H, W, C)`` images or ``(L,)`` signals).

    Raises:
        ValueError: for a model the JAX backend does not have (resnet, timm:...).
    """
    if name == "mlp":
        return MLP(tuple(int(h) for h in hidden), num_classes)
    if name == "cnn":
        return SmallCNN(num_classes, width=width, dims=2 if len(input_shape) == 3 else 1)
    raise ValueError(
        f"Expected `model` to be one of {', '.join(JAX_MODELS)} with backend 'jax'; got {name!r} "
        f"(use --backend torch for it)."
    )
