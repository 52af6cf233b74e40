from kpath.cli import main

main()
