import sys

from optml.cli.main import main

sys.exit(main())
