"""`python -m inspector.lab.rulecaps [tests/signatures]`: regenerate every rule fixture."""

import sys

from inspector.lab.rulecaps import generate

generate(sys.argv[1] if len(sys.argv) > 1 else "tests/signatures")
