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
