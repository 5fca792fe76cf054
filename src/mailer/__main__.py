"""`python -m mailer` runs the same CLI as the `mailer` console script."""

from mailer.cli import main

main()
