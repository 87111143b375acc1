"""The web app: a FastAPI server with a drawing page, on the shared Predictor."""
