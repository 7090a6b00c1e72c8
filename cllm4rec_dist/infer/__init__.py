"""Rows for ids a trained model has not seen: cold-start items from their text and fold-in users
from a few interactions, each fitted with the model frozen (``rows.fit_rows``)."""
