"""``python -m replicator`` runs the command line."""

from replicator.program import main

main(prog_name="replicator")
