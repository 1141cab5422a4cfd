from pathway.cli import run

run()
