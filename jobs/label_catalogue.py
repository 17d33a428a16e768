"""`ray job submit -- python -m jobs.label_catalogue --catalogue URI --bundle URI --output URI [...]`.

Same flags as `labeler label` (see jobs/commands/label.py); this entry point parses nothing itself.
"""

from __future__ import annotations

import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main(["label", *sys.argv[1:]]))
