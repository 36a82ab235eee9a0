import sys

from serve.main import main

sys.exit(main(sys.argv[1:]))
