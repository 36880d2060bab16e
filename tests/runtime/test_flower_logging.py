"""Flower's log lines appear once, also when the application configured logging."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("flwr")

CODE = """
import logging
logging.basicConfig(level=logging.INFO, format="root %(name)s: %(message)s")
import consortium.runtime.flower.apps  # what every consortium entry point to Flower imports
from flwr.common.logger import log
log(logging.INFO, "a line from Flower")
logging.getLogger("consortium.runtime.flower").info("a line from consortium")
"""


def test_each_log_line_is_printed_once():
    done = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=300
    )
    lines = (done.stdout + done.stderr).splitlines()
    assert sum("a line from Flower" in line for line in lines) == 1
    assert sum("a line from consortium" in line for line in lines) == 1
