"""Flax capture: sown head input + head kernel from params, for linen and NNX, against brute-force gradients."""

import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import gwa.jax as gj
import jax
from gwa._kernel import alignment_with_mask as numpy_alignment

N, D_IN, D, C = 12, 5, 7, 4


class LinenMLP(nn.Module):
    head_bias: bool = True

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(D, name="body")(x))
        self.sow("intermediates", "gwa_embeddings", x)
        return nn.Dense(C, name="head", use_bias=self.head_bias)(x)


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.sow("intermediates", "gwa_embeddings", x)
        return nn.Dense(C, name="out")(x)


class NestedLinen(nn.Module):
    @nn.compact
    def __call__(self, x):
        return Classifier(name="classifier")(nn.relu(nn.Dense(D)(x)))


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.body = nnx.Linear(D_IN, D, rngs=rngs)
        self.head = nnx.Linear(D, C, rngs=rngs)

    def __call__(self, x):
        x = nnx.tanh(self.body(x))
        self.sow(nnx.Intermediate, "gwa_embeddings", x)
        return self.head(x)


def _numpy_params(model, x, seed):
    """Random parameters without jax's threefry initialisers (slow to compile on CPU): shapes from eval_shape."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.5, s.dtype), shapes)


def _numpy_nnx(seed):
    abstract = nnx.eval_shape(lambda: NNXMLP(nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    state = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.5, s.dtype), state)
    return nnx.merge(graphdef, state)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(N, D_IN)), jnp.float32), jnp.asarray(rng.integers(0, C, size=N))


def _brute_force(params, x, y, include_bias):
    """cos(-grad_i, head params) from per-sample autograd through the whole linen model."""

    def loss(p, xi, yi):
        logits = LinenMLP().apply({"params": p}, xi[None])
        return optax.softmax_cross_entropy_with_integer_labels(logits, yi[None])[0]

    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(params, x, y)["head"]
    keys = ["kernel", "bias"] if include_bias else ["kernel"]
    g = jnp.concatenate([grads[k].reshape(N, -1) for k in keys], axis=1)
    w = jnp.concatenate([params["head"][k].ravel() for k in keys])
    return -(g @ w) / (jnp.linalg.norm(g, axis=1) * jnp.linalg.norm(w))


@pytest.mark.slow  # jit-compiles per-sample jax.grad
@pytest.mark.parametrize("include_bias", [False, True])
def test_linen_capture_under_jit_matches_brute_force(include_bias):
    x, y = _data()
    model = LinenMLP()
    params = _numpy_params(model, x, 0)["params"]

    @jax.jit
    def step(params, x, y):
        logits, state = model.apply({"params": params}, x, mutable=["intermediates"])
        return gj.alignment_from_flax(logits, y, state, params, include_bias=include_bias, with_mask=True)

    scores, defined = step(params, x, y)
    assert bool(defined.all())
    np.testing.assert_allclose(
        np.asarray(scores), np.asarray(_brute_force(params, x, y, include_bias)), atol=2e-5
    )


def test_head_weight_transposes_the_kernel_and_accepts_full_variables():
    x, _ = _data()
    variables = {**_numpy_params(LinenMLP(), x, 1), "intermediates": {"gwa_embeddings": (x,)}}
    kernel = variables["params"]["head"]["kernel"]
    assert kernel.shape == (D, C)
    np.testing.assert_array_equal(gj.head_weight(variables), kernel.T)
    np.testing.assert_array_equal(gj.head_weight(variables["params"]), kernel.T)
    np.testing.assert_array_equal(gj.head_bias(variables), variables["params"]["head"]["bias"])


def test_nested_head_path_and_sow_inside_a_submodule():
    x, y = _data(1)
    model = NestedLinen()
    params = _numpy_params(model, x, 2)["params"]
    logits, state = model.apply({"params": params}, x, mutable=["intermediates"])
    emb = nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    np.testing.assert_allclose(np.asarray(gj.sown_embeddings(state)), np.asarray(emb), atol=1e-6)
    got = gj.alignment_from_flax(logits, y, state, params, head="classifier/out")
    same = gj.alignment_from_flax(logits, y, state, params, head=("classifier", "out"))
    expected, _ = numpy_alignment(logits, y, emb, params["classifier"]["out"]["kernel"].T)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(same))


def test_nnx_capture_under_nnx_jit_matches_numpy_core():
    x, y = _data(2)
    model = _numpy_nnx(0)

    def loss_fn(model, x, y):
        logits, intermediates = nnx.capture(model, nnx.Intermediate)(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (logits, intermediates)

    @nnx.jit
    def step(model, x, y):
        (_, (logits, intermediates)), _ = nnx.value_and_grad(loss_fn, has_aux=True)(model, x, y)
        return logits, gj.alignment_from_flax(logits, y, intermediates, model, include_bias=True)

    logits, scores = step(model, x, y)
    kernel, bias = model.head.kernel[...], model.head.bias[...]
    emb = jnp.tanh(x @ model.body.kernel[...] + model.body.bias[...])
    expected, _ = numpy_alignment(logits, y, emb, kernel.T, bias)
    np.testing.assert_allclose(np.asarray(scores), expected, atol=1e-5)
    np.testing.assert_array_equal(gj.head_weight(nnx.state(model, nnx.Param)), kernel.T)


def test_sown_embeddings_errors():
    x, _ = _data()
    with pytest.raises(
        ValueError,
        match=r"Expected embeddings sown under 'gwa_embeddings'.*found none.*"
        r'self.sow\("intermediates", "gwa_embeddings", x\)',
    ):
        gj.sown_embeddings({"intermediates": {"features": (x,)}})
    with pytest.raises(ValueError, match=r"at gwa_embeddings; got 2 \(the module ran 2 times"):
        gj.sown_embeddings({"gwa_embeddings": (x, x)})
    with pytest.raises(ValueError, match=r"found it at several places: a/gwa_embeddings, b/gwa_embeddings"):
        gj.sown_embeddings({"a": {"gwa_embeddings": (x,)}, "b": {"gwa_embeddings": (x,)}})
    np.testing.assert_array_equal(gj.sown_embeddings({"z": (x,)}, name="z"), x)


def test_head_lookup_errors():
    x, _ = _data()
    params = _numpy_params(LinenMLP(head_bias=False), x, 3)["params"]
    with pytest.raises(
        ValueError,
        match=r"Expected a head layer 'classifier' with a 'kernel' in `params`; "
        r"layers with a 'kernel': body, head\. Pass head=",
    ):
        gj.head_weight(params, "classifier")
    with pytest.raises(
        ValueError, match=r"Expected a head layer 'head' with a 'bias'.*layers with a 'bias': body"
    ):
        gj.head_bias(params)
    with pytest.raises(TypeError, match=r"Expected `head` to be a layer name"):
        gj.head_weight(params, 3)
    conv = {"conv": {"kernel": jnp.zeros((3, 3, 1, 4))}}
    with pytest.raises(ValueError, match=r"Expected the head 'conv' to be a Dense layer with a 2-D kernel"):
        gj.head_weight(conv, "conv")
