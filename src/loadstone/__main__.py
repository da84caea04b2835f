from loadstone.cli import main

raise SystemExit(main())
