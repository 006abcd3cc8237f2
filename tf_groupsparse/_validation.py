"""Argument checks shared by every public object.

Errors follow the Keras shape "Expected ... Received: name=value" and name the owner
(a class, a function or a layer) so the user knows where to fix the call.
"""

from __future__ import annotations

import numbers


def _prefix(owner: str | None) -> str:
    return f"{owner}: " if owner else ""


def check_number(name, value, owner=None, *, minimum=0.0, maximum=None, strict=False):
    """Return `value` as a float after checking it is a real number in range.

    Args:
        name: argument name used in the message.
        value: what the user passed.
        owner: class or function name that received the argument.
        minimum: smallest allowed value (inclusive unless `strict`).
        maximum: largest allowed value (inclusive), or None for no bound.
        strict: when True the value must be strictly greater than `minimum`.

    Raises:
        TypeError: `value` is not a real number (bools are refused too).
        ValueError: `value` is out of range or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{_prefix(owner)}Expected `{name}` to be a real number. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{_prefix(owner)}Expected `{name}` to be finite. Received: {name}={value!r}")
    low_ok = value > minimum if strict else value >= minimum
    high_ok = maximum is None or value <= maximum
    if not (low_ok and high_ok):
        low = f"> {minimum:g}" if strict else f">= {minimum:g}"
        high = "" if maximum is None else f" and <= {maximum:g}"
        raise ValueError(
            f"{_prefix(owner)}Expected `{name}` {low}{high}. Received: {name}={value!r}"
        )
    return value


def check_int(name, value, owner=None, *, minimum=None, maximum=None):
    """Return `value` as an int after checking it is an integer in range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{_prefix(owner)}Expected `{name}` to be an integer. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = []
        if minimum is not None:
            bounds.append(f">= {minimum}")
        if maximum is not None:
            bounds.append(f"<= {maximum}")
        raise ValueError(
            f"{_prefix(owner)}Expected `{name}` {' and '.join(bounds)}. Received: {name}={value!r}"
        )
    return value


def check_choice(name, value, choices, owner=None):
    """Return `value` if it is one of `choices`, else raise ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"{_prefix(owner)}Expected `{name}` to be one of {listed}. Received: {name}={value!r}"
        )
    return value


def check_keras_model(model, owner=None, name="model"):
    """Raise TypeError unless `model` is a built `keras.Model`."""
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{_prefix(owner)}Expected `{name}` to be a keras.Model (Sequential or functional). "
            f"Received: {name} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"{_prefix(owner)}Expected `{name}` to be built (call it on data or give it an Input). "
            f"Received: an unbuilt model named {model.name!r}"
        )
    return model


def check_bool(name, value, owner=None):
    """Return `value` as a bool if it is True or False (NumPy bools too), else raise TypeError."""
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{_prefix(owner)}Expected `{name}` to be True or False. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return bool(value)


def check_graph_model(model, owner=None, name="model"):
    """Raise unless `model` is a built Sequential or functional ``keras.Model``.

    A subclassed model has no graph of layers to read; the message says how to get one.
    """
    import keras

    check_keras_model(model, owner, name)
    if not isinstance(model, keras.Sequential):
        try:
            has_graph = bool(model.inputs) and bool(model.outputs)
        except (AttributeError, ValueError):
            has_graph = False
        if not has_graph:
            raise TypeError(
                f"{_prefix(owner)}Expected `{name}` to be a Sequential or functional keras.Model (a "
                "graph of layers). Received: a subclassed model of type "
                f"{type(model).__name__}, whose call() cannot be read layer by layer. Build the same "
                "layers with keras.Input and the functional API (keras.Model(inputs, outputs)), or "
                "wrap them in keras.Sequential."
            )
    return model


def check_verbose(verbose, owner=None):
    """Return `verbose` (0 silent, 1 progress bar, 2 one line per step) after checking it."""
    return check_int("verbose", verbose, owner, minimum=0, maximum=2)


def check_seed(seed, owner=None, *, random_state=None, default=0):
    """The seed of a call that takes ``seed=`` (new spelling) or ``random_state=`` (old).

    ``random_state`` still works for one release with a DeprecationWarning naming ``seed``;
    both at once is an error. Returns an int >= 0.
    """
    import warnings

    if random_state is not None:
        if seed is not None:
            raise TypeError(
                f"{_prefix(owner)}Expected `seed` only (`random_state` is its old name). "
                f"Received: seed={seed!r} and random_state={random_state!r}"
            )
        warnings.warn(
            f"{_prefix(owner)}`random_state` is deprecated; use `seed` (same meaning).",
            DeprecationWarning, stacklevel=3,
        )
        seed = random_state
    if seed is None:
        seed = default
    return None if seed is None else check_int("seed", seed, owner, minimum=0)


def renamed(owner, new_name, new_value, old_name, old_value):
    """The value of an argument whose old spelling still works for one release.

    Returns `new_value`, or `old_value` with a DeprecationWarning naming `new_name` when only the
    old spelling was given (None means "not given"); both at once is a TypeError.
    """
    import warnings

    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(
            f"{_prefix(owner)}Expected `{new_name}` only (`{old_name}` is its old name). "
            f"Received: {new_name}={new_value!r} and {old_name}={old_value!r}"
        )
    warnings.warn(f"{_prefix(owner)}`{old_name}` is deprecated; use `{new_name}`.", DeprecationWarning, stacklevel=3)
    return old_value
