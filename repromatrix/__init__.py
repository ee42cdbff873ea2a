"""repromatrix: which TensorFlow environments give bit-identical outputs.

Data flow: matrix.toml → runner (this package) → docker/ recipes → scenarios/
→ results → reporting/.
"""

__version__ = "0.1.0"
