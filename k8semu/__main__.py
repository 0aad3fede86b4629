"""`python -m k8semu` is the `k8semu` command."""

from k8semu.cli.main import main

raise SystemExit(main())
