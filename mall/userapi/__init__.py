"""user-api: the REST front of the mall."""
