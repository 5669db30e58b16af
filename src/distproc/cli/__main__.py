"""``python -m distproc.cli`` runs the command line."""

from distproc.cli.main import main

main()
