import sys

from router.entry import main

sys.exit(main())
