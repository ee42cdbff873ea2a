"""A small convolutional classifier trained a few steps on fixed images: big enough to feel cores and CPU kernels."""

from __future__ import annotations

if __package__:
    from . import common
else:  # run as a script: python scenarios/cnn_training.py
    import common  # type: ignore[no-redef,import-not-found]

import tensorflow as tf

VARIANTS = ("unseeded", "seeded")
IMAGES, SIDE, CHANNELS, CLASSES = 64, 32, 3, 10
EPOCHS, BATCH = 2, 32


def build() -> tf.keras.Model:
    # Convolutions whose reductions (3·3·32 = 288 terms) TF splits across its intra-op threads:
    # with one core the sums are taken in another order than with two, so the bits follow the
    # core count. The article's 2→10→1 dense model is far too small to show that.
    return tf.keras.Sequential([
        tf.keras.Input(shape=(SIDE, SIDE, CHANNELS)),
        tf.keras.layers.Conv2D(32, 3, padding="same"),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.ReLU(),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Conv2D(64, 3, padding="same"),
        tf.keras.layers.ReLU(),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(CLASSES),
    ])  # fmt: skip


def run(variant: str, seed: int | None) -> common.Outputs:
    images = common.fixed_data(IMAGES, SIDE, SIDE, CHANNELS, stream=3)
    labels = common.fixed_data(IMAGES, stream=4, classes=CLASSES)
    outputs: common.Outputs = {}
    for name in ("model1", "model2"):
        if variant == "seeded":
            common.seed_everything(seed)
        model = build()
        model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = common.fit_recording(model, images, labels, EPOCHS, batch_size=BATCH)
        outputs[name] = {**common.model_outputs(model, images), **history}
    return outputs


if __name__ == "__main__":
    raise SystemExit(common.standalone(run, VARIANTS))
