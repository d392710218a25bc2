import sys

from shiftbench.cli import main

sys.exit(main())
