"""``python -m stmm_core`` is the ``stmm`` command (torchrun starts its worker processes this way)."""

import os
import sys

from stmm_core.cli.main import main

if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
    # a torchrun worker that succeeded ends without the interpreter's teardown (distributed.context.exit_now);
    # a failing one exits as usual, so every rank reports its own error before torchrun stops the others
    code = main()
    if not code:
        from stmm_core.distributed.context import exit_now

        exit_now(0)
    sys.exit(code)
sys.exit(main())
