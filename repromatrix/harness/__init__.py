"""What runs inside a cell: `python -m repromatrix.harness`, the harness the runner starts in every cell.

- `__main__`: the harness — reads the runner's plan, runs each repeat in its own process identity,
  leaves one record per repeat, writes the summary the runner reads back;
- `launch`: how a repeat's process is started (a fresh interpreter, or a fork of a parent that
  imported TensorFlow once: `forkserver`), and the environment every process in a cell gets;
- `worker`: one repeat in one process — knobs applied, TF imported, the scenario run, the record written;
- `catalog`: the scenario modules (found by reading their source), the plan of repeats, reuse keys;
- `axes`: the table of every axis of the matrix; `hosts`: the machine a record was measured on;
- the files between the processes: the record (`records`), the results folder (`layout`), what the
  runner and the harness hand each other (`exchange`), atomic writes (`fileio`).

Standard library only (NumPy where arrays are written): staged into every cell beside the
scenarios, where this package and they are all of `repromatrix` there is.
"""
