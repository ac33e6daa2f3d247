from gais_pipe.cli import main

if __name__ == "__main__":  # decode workers started by spawn or forkserver import this module again
    main()
