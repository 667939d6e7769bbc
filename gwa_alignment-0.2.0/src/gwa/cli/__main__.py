import sys

from gwa.cli import main

sys.exit(main())
