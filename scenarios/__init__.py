"""The built-in experiments: the article's three (init, seeded_init, dropout_training) and a CNN.

A scenario is a module that defines, at module level:

- `VARIANTS`: a tuple literal of variant names ("unseeded", "seeded", or your own);
- `run(variant, seed)`: builds two models the same way and returns
  `{"model1": {"predictions": array, ...}, "model2": {...}}`;
- optionally `EXPECT`: per variant, what run-to-run and in-process comparisons
  should show, and `SEED`: the scenario's own seed.

Assigning `VARIANTS` is what marks a module as a scenario; `common` (what they
share) is not. Installed, this folder is `repromatrix.scenarios`; inside every cell
a user's scenario folders are staged into it beside the built-ins. The harness that
runs them is `repromatrix/harness/`. See docs/scenarios.md for a worked example.
"""
