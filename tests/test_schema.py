"""The schema itself: migrations plus repeatables apply from empty, and again without change."""

from __future__ import annotations

import os

import psycopg

from app.db.migrate import migrate, repeatable_files
from tests.conftest import drop_database

SCHEMA_FINGERPRINT = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
    SELECT format('rel %s.%s %s', n.nspname, c.relname, c.relkind) AS item
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('waybill', 'analytics')
    UNION ALL
    SELECT format('col %s.%s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull)
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('waybill', 'analytics') AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('fn %s.%s(%s) %s', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc))
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname IN ('waybill', 'analytics')
    UNION ALL
    SELECT format('acl %s %s', c.relname, c.relacl::text)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('waybill', 'analytics')
) items
"""


def fingerprint(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute(SCHEMA_FINGERPRINT).fetchone()[0]


def test_empty_database_migrates_to_head_and_again_without_change(server_url):
    admin_url = psycopg.conninfo.make_conninfo(server_url, dbname="postgres")
    name = f"waybill_test_empty_{os.getpid()}"
    url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        first = migrate(url, schedule=False)
        assert first.applied, "an empty database has every migration pending"
        assert first.repeatables == len(repeatable_files())
        before = fingerprint(url)
        second = migrate(url, schedule=False)
        assert second.applied == []
        assert fingerprint(url) == before
    finally:
        drop_database(server_url, url)


def test_no_function_has_accidental_overloads(db):
    rows = db.execute("""
        SELECT p.proname, count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'waybill' GROUP BY 1 HAVING count(*) > 1""").fetchall()
    assert rows == []


# Small tables looked up before the project is known: Citus reference tables.
REFERENCE_TABLES = {"project_api_keys"}


def test_unique_keys_of_project_tables_include_project_id(db):
    """Each per-project table can be distributed by project_id (docs/scaling.md)."""
    rows = db.execute("""
        SELECT c.relname, ic.relname,
               bool_or(a.attname = 'project_id') AS has_project
          FROM pg_index i
          JOIN pg_class c ON c.oid = i.indrelid
          JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
         WHERE n.nspname = 'waybill' AND i.indisunique AND NOT c.relispartition
           AND EXISTS (SELECT 1 FROM pg_attribute p WHERE p.attrelid = c.oid
                        AND p.attname = 'project_id' AND NOT p.attisdropped)
         GROUP BY 1, 2""").fetchall()
    assert rows, "the catalog query found no unique keys"
    missing = [(table, index) for table, index, has_project in rows
               if not has_project and table not in REFERENCE_TABLES]
    assert missing == []
