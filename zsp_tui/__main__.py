from zsp_tui.cli import main

raise SystemExit(main())
