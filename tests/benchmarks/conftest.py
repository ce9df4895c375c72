"""The benchmarks are scripts run from their folder (``python benchmarks/quality.py``), which
puts that folder on the import path; their tests import the benchmarks' modules the same way."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
