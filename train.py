#!/usr/bin/env python
"""Train PPO offloading thresholds: a thin wrapper over ``mllm-offload train``."""

import sys

from mllm_offload.cli import main_train

if __name__ == "__main__":
    sys.exit(main_train())
