# PostgreSQL with pg_cron, for docker-compose and for tests on machines with Docker.
FROM postgres:16-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-16-cron \
 && rm -rf /var/lib/apt/lists/*
# wal_compression=lz4: see SERVER_SETTINGS in app/db/cluster.py
CMD ["postgres", "-c", "shared_preload_libraries=pg_cron", "-c", "cron.database_name=postgres", \
     "-c", "wal_compression=lz4"]
