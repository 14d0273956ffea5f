from ifm.cli import main

raise SystemExit(main())
