"""Example 3: Dropout(0.5) and 5 epochs of adam/mse training, unseeded and seeded."""

from __future__ import annotations

if __package__:
    from . import common
else:  # run as a script: python scenarios/dropout_training.py
    import common  # type: ignore[no-redef,import-not-found]

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
        # Weights at initialisation and after each epoch: the report names the first epoch that differs.
        history = common.fit_recording(model, inputs, targets, EPOCHS)
        outputs[name] = {**common.model_outputs(model, inputs), **history}
    return outputs


if __name__ == "__main__":
    raise SystemExit(common.standalone(run, VARIANTS))
