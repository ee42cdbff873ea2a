"""What scenarios share: fixed data, seeding, and reading a model's outputs layer by layer and epoch by epoch.

TensorFlow, NumPy and the standard library only, so scenarios run in any TF image.
Import it as `from repromatrix.scenarios import common` (a user's scenario folder runs
beside this package inside every cell).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

if not __package__:  # run as a script (python scenarios/init.py) from a checkout: its package, by its one name
    sys.path.append(str(Path(__file__).resolve().parent.parent))
from repromatrix.harness import records

Outputs = dict[str, dict[str, np.ndarray]]

# The data comes from its own generator, never from the global NumPy state, so
# "unseeded" means the model alone and every repeat sees the very same inputs.
DATA_SEED = 20250130


def fixed_data(*shape: int, stream: int = 0, classes: int | None = None) -> np.ndarray:
    """The same array in every process: float32 in [0, 1) of any shape (rows, columns), (n, 32, 32, 3)...

    With `classes`, integer labels in [0, classes) instead, for classifiers. `stream`
    picks an independent sequence, so inputs and targets do not share values.
    """
    if not shape or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"fixed_data needs a shape of positive integers, got {shape}")
    generator = np.random.Generator(np.random.PCG64([DATA_SEED, stream]))
    if classes is not None:
        return generator.integers(0, classes, size=shape, dtype=np.int64)
    return generator.random(shape, dtype=np.float32)


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


def flat_weights(model: tf.keras.Model) -> np.ndarray:
    """Every weight, flattened into one vector in layer order."""
    return np.concatenate([np.asarray(w).ravel() for w in model.get_weights()])


def _layer_name(index: int, layer: Any) -> str:
    # The class, not the layer's own name: Keras numbers names per process (dense_3 in
    # model2), and the names must be the same for both models and every process.
    kind = "".join(f"_{c.lower()}" if c.isupper() else c for c in type(layer).__name__).lstrip("_")
    return f"layer.{index:02d}.{kind}"


def layer_outputs(model: tf.keras.Model, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Each layer's output on `inputs` (inference mode), named `layer.NN.kind` in layer order.

    The reporter uses them to name the first layer whose bits differ between two results.
    """
    found: dict[str, np.ndarray] = {}
    value: Any = inputs
    for index, layer in enumerate(model.layers):
        value = layer(value, training=False)
        found[_layer_name(index, layer)] = np.asarray(value)
    return found


def model_outputs(model: tf.keras.Model, inputs: np.ndarray, layers: bool = True) -> dict[str, np.ndarray]:
    """Predictions, every weight flattened in layer order, and (for sequential models) each layer's output."""
    outputs = {"predictions": np.asarray(model.predict(inputs, verbose=0)), "weights": flat_weights(model)}
    if layers and isinstance(model, tf.keras.Sequential):
        outputs.update(layer_outputs(model, inputs))
    return outputs


def fit_recording(model: tf.keras.Model, inputs: np.ndarray, targets: np.ndarray, epochs: int,
                  **fit_args: Any) -> dict[str, np.ndarray]:  # fmt: skip
    """`model.fit`, keeping the weights at initialisation (epoch 00) and after each epoch, and each epoch's loss.

    Reading the weights consumes no random numbers, so training gives the same bits with or without it.
    """
    state: dict[str, np.ndarray] = {"epoch.00.weights": flat_weights(model)}

    def keep(epoch: int, logs: dict[str, Any] | None) -> None:
        state[f"epoch.{epoch + 1:02d}.weights"] = flat_weights(model)
        state[f"epoch.{epoch + 1:02d}.loss"] = np.asarray((logs or {}).get("loss", np.nan), dtype=np.float64)

    model.fit(inputs, targets, epochs=epochs, verbose=0,
              callbacks=[tf.keras.callbacks.LambdaCallback(on_epoch_end=keep)], **fit_args)  # fmt: skip
    return state


def print_article_lines(label: str, outputs: Outputs) -> None:
    first = outputs["model1"]["predictions"]
    second = outputs["model2"]["predictions"]
    print(f"[{label}]")
    print(f"First Model Output: {first.ravel()[0]}")
    print(f"Second Model Output: {second.ravel()[0]}")
    print(f"Are outputs identical?: {np.array_equal(first, second)}")


def standalone(
    run: Callable[[str, int | None], Outputs],
    variants: Sequence[str],
    argv: Sequence[str] | None = None,
    seed: int | None = None,
) -> int:
    """`python NAME.py [SEED]`: each variant once, printed as the article does."""
    args = list(sys.argv[1:] if argv is None else argv)
    chosen = int(args[0]) if args else (seed if seed is not None else records.DEFAULT_SEED)
    for variant in variants:
        print_article_lines(variant, run(variant, records.seed_for(variant, chosen)))
    return 0
