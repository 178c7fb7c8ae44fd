import sys

from oai_gateway.cli import main

sys.exit(main())
