-- Runs once when the database volume is created: pg_cron lives in `postgres`;
-- Waybill's own database is created beside it.
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE DATABASE waybill;
