from dtmx.cli import main

raise SystemExit(main())
