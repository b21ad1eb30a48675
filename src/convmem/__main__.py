from convmem.cli import main

main()
