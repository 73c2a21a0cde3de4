"""The test suite (a package, so tests import shared helpers as ``tests.helpers`` and the like).

Byte-code is cached for the suite even where PYTHONDONTWRITEBYTECODE is set, as on our CI
machines: the tests run ``python -m zsp_tui`` in hundreds of subprocesses, and each one compiled
the project's 44,000 lines again, about 0.4 s of CPU per command (tests/test_cli*.py: 51 s
uncached, 34 s cached). This package is imported before conftest.py imports the project, so
this process and the pytest-xdist workers and subprocesses it starts all cache.
"""

import os
import sys

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
