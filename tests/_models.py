"""Small models the tests share."""

import keras

L = keras.layers


def residual_cnn(input_shape=(12, 12, 3), classes=4, seed=0, name="resnet_tiny"):
    """A stem conv, two residual blocks (conv-BN-ReLU-conv-BN + Add) and a Dense head; the
    residual stream (16 channels) couples the stem with both blocks' second convs. BatchNorm
    momentum 0.9 so that short trainings settle its moving statistics."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = L.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn", momentum=0.9)(x)
    x = L.ReLU()(x)
    for i in range(2):
        h = L.Conv2D(24, 3, padding="same", name=f"b{i}_c1")(x)
        h = L.BatchNormalization(name=f"b{i}_bn1", momentum=0.9)(h)
        h = L.ReLU()(h)
        h = L.Conv2D(16, 3, padding="same", name=f"b{i}_c2")(h)
        h = L.BatchNormalization(name=f"b{i}_bn2", momentum=0.9)(h)
        x = L.ReLU()(L.Add(name=f"b{i}_add")([x, h]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(classes, name="head")(x), name=name)
