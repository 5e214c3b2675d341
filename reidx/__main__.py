from reidx.cli import entry

entry()
