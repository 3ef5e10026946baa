"""Database access: the embedded cluster, migrations, the pool, error mapping."""
