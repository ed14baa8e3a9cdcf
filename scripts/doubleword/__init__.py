"""The library behind the commands in ``scripts/``: each command is a thin ``main`` over these modules.

``scripts/`` is first on ``sys.path`` when a command runs, so ``import doubleword`` works with nothing
installed.
"""
