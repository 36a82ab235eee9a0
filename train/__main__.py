import sys

from optml.train.main import main

sys.exit(main(sys.argv[1:]))
