"""`python -m tests.reliability.launch ARGS`: the lmc CLI with the test timeout/retry defaults applied."""

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

if __name__ == "__main__":
    from tests.reliability.helpers import patch_client_defaults

    patch_client_defaults()
    from lmc.cli import main

    sys.exit(main(sys.argv[1:]))
