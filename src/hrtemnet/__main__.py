"""`python -m hrtemnet ...`: the same CLI as the `hrtemnet` command (for environments without its entry point)."""

from hrtemnet.cli import app

app(prog_name="hrtemnet")
