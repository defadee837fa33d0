from sensord.cli.main import main

raise SystemExit(main())
