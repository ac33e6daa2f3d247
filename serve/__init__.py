"""The search service (`gais-pipe serve`): the index loaded once, a JSON API and a results page.

`engine` answers searches from one loaded `Searcher` and picks up a rebuilt index; `thumbnails` makes
each video's frame strip once; `app` is the FastAPI application; `static/` holds the page.
"""
