"""Example 2: seeding TensorFlow, NumPy and `random` before each build makes the builds identical."""

from __future__ import annotations

if __package__:
    from . import common
else:  # run as a script: python scenarios/seeded_init.py
    import common  # type: ignore[no-redef,import-not-found]

VARIANTS = ("seeded",)


def run(variant: str, seed: int | None) -> common.Outputs:
    inputs = common.fixed_data(10, 2)
    outputs: common.Outputs = {}
    for name in ("model1", "model2"):
        common.seed_everything(seed)
        outputs[name] = common.model_outputs(common.dense_model(), inputs)
    return outputs


if __name__ == "__main__":
    raise SystemExit(common.standalone(run, VARIANTS))
