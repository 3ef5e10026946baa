-- depends: 0002_usage_and_keys
-- ingest_events takes the batch as one JSON document (parsed in C on the server)
-- instead of one array per column; the old signature goes, so no overload stays.
DROP FUNCTION IF EXISTS waybill.ingest_events(
    uuid[], uuid[], waybill.event_type[], text[], text[], timestamptz[], text[], uuid[], uuid[],
    numeric[], numeric[], numeric[], numeric[], numeric[], jsonb[], jsonb[], uuid[], text[]);
DROP FUNCTION IF EXISTS waybill.ingest_events(json);
