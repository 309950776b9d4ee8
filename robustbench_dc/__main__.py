from robustbench_dc.cli import main

raise SystemExit(main())
