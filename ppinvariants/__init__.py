"""ppinvariants: invariant checks for seq2seq ``generate()`` outputs.

Importing the package is cheap; torch and transformers load when a submodule needs them.
"""

__version__ = "0.1.0"
