from pathway.console import run

run()
