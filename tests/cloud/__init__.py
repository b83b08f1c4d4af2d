"""Cloud backend tests: API tests run on SQLite and on a private PostgreSQL cluster."""
