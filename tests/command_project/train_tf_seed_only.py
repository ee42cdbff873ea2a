"""The same training, seeded the way many scripts are: tf.random.set_seed alone.

That seeds TensorFlow's global generator, not Keras's initializers (in TF 2.15 and 2.21 alike):
the weights still differ from run to run.
"""

import argparse
import os

import numpy as np
import tensorflow as tf
from train import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.seed is not None:
        tf.random.set_seed(args.seed)
    inputs, targets = data()
    model = tf.keras.Sequential(
        [tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(8, activation="relu"), tf.keras.layers.Dense(1)]
    )
    model.compile(optimizer="adam", loss="mse")
    model.fit(inputs, targets, epochs=2, batch_size=16, verbose=0, shuffle=False)
    model.save(os.path.join(args.out, "model.keras"))
    np.save(os.path.join(args.out, "preds.npy"), model.predict(inputs, verbose=0))


if __name__ == "__main__":
    main()
