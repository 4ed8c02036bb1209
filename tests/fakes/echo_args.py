"""A stand-in tool: prints $FAKE_OUTPUT and exits with $FAKE_EXIT (for tools whose output is one fixed text)."""

import os
import sys

sys.stdout.write(os.environ.get("FAKE_OUTPUT", ""))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
