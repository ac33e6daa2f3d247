from gais_pipe.cli import app

app()
