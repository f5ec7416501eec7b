"""The shipped invariant suite: ``pytest --pyargs ppinvariants.suite --ppi-model TARGET``.

Without ``--ppi-model`` (or the ``ppi_models`` ini key) it checks every built-in tiny model.
To run it inside your own test run, add a test file containing::

    from ppinvariants.suite.test_invariants import *  # noqa: F401,F403
"""
