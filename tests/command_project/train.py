"""A plain Keras training script, as a user has it: it knows nothing of repromatrix.

python train.py --seed 42 --out results/ trains a small model on fixed data and saves what such
scripts save: the model (model.keras), its weights (model.weights.h5), a checkpoint after every
epoch (checkpoints/epoch-NN.weights.h5) and its predictions (preds.npy). Without --seed it is
unseeded, as most first versions of a script are.
"""

import argparse
import os

import numpy as np
import tensorflow as tf


def data() -> tuple[np.ndarray, np.ndarray]:
    """The same 64 rows in every run, whatever the seed."""
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(64, 4)).astype("float32")
    targets = (inputs @ np.array([[0.5], [-1.0], [2.0], [0.25]], dtype="float32")).astype("float32")
    return inputs, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="seed Python, NumPy, TensorFlow and Keras (default: unseeded)")
    parser.add_argument("--out", required=True, help="folder the model, checkpoints and predictions go to")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if args.seed is not None:
        tf.keras.utils.set_random_seed(args.seed)
    inputs, targets = data()
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(4,)),
            tf.keras.layers.Dense(8, activation="relu"),
            tf.keras.layers.Dropout(0.25),
            tf.keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    every_epoch = tf.keras.callbacks.ModelCheckpoint(
        os.path.join(args.out, "checkpoints", "epoch-{epoch:02d}.weights.h5"), save_weights_only=True
    )
    model.fit(inputs, targets, epochs=args.epochs, batch_size=16, verbose=0, callbacks=[every_epoch])
    model.save(os.path.join(args.out, "model.keras"))
    model.save_weights(os.path.join(args.out, "model.weights.h5"))
    np.save(os.path.join(args.out, "preds.npy"), model.predict(inputs, verbose=0))
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
