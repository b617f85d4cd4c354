"""The live parity tests import the fixture writer beside them and the shared comparisons in tests/."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
