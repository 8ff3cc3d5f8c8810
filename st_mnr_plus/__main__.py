from __future__ import annotations

from st_mnr_plus.cli import main

raise SystemExit(main())
