from gais_pipe.cli import main

main()
