"""Example 3: Dropout(0.5) and 5 epochs of adam/mse training, unseeded and seeded."""

from __future__ import annotations

if __package__:
    from . import _common as common
else:  # run as a script: python scenarios/dropout_training.py
    import _common as common

VARIANTS = ("unseeded", "seeded")
EPOCHS = 5


def run(variant: str, seed: int | None) -> common.Outputs:
    inputs = common.fixed_data(100, 2, stream=1)
    targets = common.fixed_data(100, 1, stream=2)
    outputs: common.Outputs = {}
    for name in ("model1", "model2"):
        if variant == "seeded":
            common.seed_everything(seed)
        model = common.dense_model(dropout=0.5)
        model.compile(optimizer="adam", loss="mse")
        model.fit(inputs, targets, epochs=EPOCHS, verbose=0)
        outputs[name] = common.model_outputs(model, inputs)
    return outputs


if __name__ == "__main__":
    raise SystemExit(common.standalone(run, VARIANTS))
