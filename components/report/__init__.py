"""The run report: ``runs/D/report/index.html``, one self-contained page per run (DESIGN §3)."""
