import sys

from meshwg.cli import main

sys.exit(main())
