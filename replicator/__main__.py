"""``python -m replicator`` runs the command line."""

from replicator.cli import main

main(prog_name="replicator")
