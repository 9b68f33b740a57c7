"""``python -m galforge ...`` runs the command line (useful with ``torchrun``)."""

from galforge.cli import entry

if __name__ == "__main__":
    entry()
