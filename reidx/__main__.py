from reidx.cli import main

main()
