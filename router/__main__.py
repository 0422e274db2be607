import sys

from router.doors.entry import main

sys.exit(main())
