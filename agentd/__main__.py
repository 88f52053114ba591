"""``python -m agentd`` is the ``agentd`` command (useful when the script dir is not on PATH)."""

import sys

from agentd.main import main

sys.exit(main())
