import sys

from optml.serve.main import main

sys.exit(main(sys.argv[1:]))
