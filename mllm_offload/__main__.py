"""``python -m mllm_offload ...`` = ``mllm-offload ...``."""

import sys

from .cli import main

sys.exit(main())
