"""``python -m stmm_core`` is the ``stmm`` command."""

import sys

from stmm_core.cli.main import main

sys.exit(main())
