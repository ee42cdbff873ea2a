"""What the article's three examples share: fixed data, seeding, reading a model's outputs.

TensorFlow, NumPy and the standard library only, so scenarios run in any TF image.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

Outputs = dict[str, dict[str, np.ndarray]]

# The data comes from its own generator, never from the global NumPy state, so
# "unseeded" means the model alone and every repeat sees the very same inputs.
DATA_SEED = 20250130


def fixed_data(rows: int, columns: int, stream: int = 0) -> np.ndarray:
    generator = np.random.Generator(np.random.PCG64([DATA_SEED, stream]))
    return generator.random((rows, columns), dtype=np.float32)


def seed_everything(seed: int | None) -> None:
    """The article's three levels: TensorFlow, NumPy and Python's `random`."""
    # Checked with `is None`: seed 0 is a seed (the article's `if seed:` drops it).
    if seed is None:
        raise ValueError("a seeded variant needs a seed")
    tf.random.set_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def dense_model(dropout: float | None = None) -> tf.keras.Model:
    layers: list[tf.keras.layers.Layer] = [tf.keras.layers.Dense(10, activation="relu")]
    if dropout is not None:
        layers.append(tf.keras.layers.Dropout(dropout))
    layers.append(tf.keras.layers.Dense(1))
    # An Input layer instead of `input_shape=` builds the same model without
    # Keras 3's deprecation warning, on Keras 2 and 3 alike.
    return tf.keras.Sequential([tf.keras.Input(shape=(2,)), *layers])


def model_outputs(model: tf.keras.Model, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Predictions, and every weight flattened into one vector in layer order."""
    predictions = np.asarray(model.predict(inputs, verbose=0))
    weights = np.concatenate([np.asarray(w).ravel() for w in model.get_weights()])
    return {"predictions": predictions, "weights": weights}


def print_article_lines(label: str, outputs: Outputs) -> None:
    first = outputs["model1"]["predictions"]
    second = outputs["model2"]["predictions"]
    print(f"[{label}]")
    print(f"First Model Output: {first.ravel()[0]}")
    print(f"Second Model Output: {second.ravel()[0]}")
    print(f"Are outputs identical?: {np.array_equal(first, second)}")


def standalone(
    run: Callable[[str, int | None], Outputs], variants: Sequence[str], argv: Sequence[str] | None = None
) -> int:
    """`python scenarios/NAME.py [SEED]`: each variant once, printed as the article does."""
    args = list(sys.argv[1:] if argv is None else argv)
    seed = int(args[0]) if args else 42
    for variant in variants:
        used_seed = seed if variant == "seeded" else None
        print_article_lines(variant, run(variant, used_seed))
    return 0
