import sys

from steercf.cli import main

sys.exit(main())
