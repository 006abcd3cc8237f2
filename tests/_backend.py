"""Backend-neutral test helpers: the gradient of a scalar function of one array, on the
TensorFlow, JAX or PyTorch backend of Keras (whichever KERAS_BACKEND selects)."""

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
#: for tests of TensorFlow-only features (tf.distribute, tf.data, tf.function tracing)
tensorflow_only = pytest.mark.skipif(BACKEND != "tensorflow", reason="a TensorFlow-only feature")


def value_and_grad(fn, w):
    """``(fn(w), dfn/dw)`` as NumPy, `w` an array, `fn` built from keras.ops."""
    w = np.asarray(w)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        var = tf.Variable(w)
        with tf.GradientTape() as tape:
            value = fn(var)
        grad = tape.gradient(value, var)
    elif BACKEND == "jax":
        import jax

        value, grad = jax.value_and_grad(lambda v: fn(v))(keras.ops.convert_to_tensor(w))
    else:
        import torch

        var = torch.tensor(w, requires_grad=True)
        value = fn(var)
        value.backward()
        grad = var.grad
    grad = np.zeros_like(w) if grad is None else keras.ops.convert_to_numpy(grad)
    return float(keras.ops.convert_to_numpy(value)), grad
