"""``python -m gptkit`` runs the command line (torchrun uses this entry too)."""

from gptkit.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="gptkit")
