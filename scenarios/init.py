"""Example 1: the same model built twice with no seed predicts differently."""

from __future__ import annotations

if __package__:
    from . import common
else:  # run as a script: python scenarios/init.py
    import common  # type: ignore[no-redef,import-not-found]

VARIANTS = ("unseeded",)


def run(variant: str, seed: int | None) -> common.Outputs:
    inputs = common.fixed_data(10, 2)
    return {name: common.model_outputs(common.dense_model(), inputs) for name in ("model1", "model2")}


if __name__ == "__main__":
    raise SystemExit(common.standalone(run, VARIANTS))
