import sys

from meshwg.cli.main import main

sys.exit(main())
