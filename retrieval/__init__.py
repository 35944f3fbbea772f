"""Query-time retrieval: first stage, fusion, selection, named pipelines."""
