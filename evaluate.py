#!/usr/bin/env python
"""Evaluate offloading policies side by side: a thin wrapper over ``mllm-offload evaluate``."""

import sys

from mllm_offload.cli import main_evaluate

if __name__ == "__main__":
    sys.exit(main_evaluate())
