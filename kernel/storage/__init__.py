"""Storage: the database (SQLite by default, PostgreSQL by DATABASE_URL), its tables, migrations, queries."""
