from gais_pipe.cli import app

if __name__ == "__main__":  # decode workers started by spawn or forkserver import this module again
    app()
