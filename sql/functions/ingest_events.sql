-- waybill.ingest_events: store a batch of validated events exactly once.
--
-- Input: p_events, a JSON array with one object per event, in the order the client
-- sent them: the usage_events columns plus dedupe_key and content_digest. One
-- JSON parameter keeps the client's work small; the server parses it in C.
-- Output: one row per duplicate (ordinal, event_id): the 0-based position of an
-- event whose key was already taken, with the event_id first stored under that
-- key, whether earlier in this batch or by an earlier call. No rows: all new.
-- Side effects: inserts into event_keys and usage_events, atomically (one
-- statement from the caller: all rows or none).
-- Errors: WB409 when an idempotency key was already used for different content
-- (DETAIL holds {"indexes": [...]}, the offending ordinals, 0-based).
CREATE OR REPLACE FUNCTION waybill.ingest_events(p_events json)
RETURNS TABLE (ordinal integer, event_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    v_count     integer;
    v_claimed   integer;
    v_ordinals  integer[];
    v_ids       uuid[];
    v_conflicts integer[];
BEGIN
    WITH input AS MATERIALIZED (
        SELECT * FROM json_to_recordset(p_events) AS t(
            event_id uuid, project_id uuid, event_type waybill.event_type, resource_type text,
            resource_id text, event_time timestamptz, idempotency_key text, dedupe_key uuid,
            content_digest uuid, replicas numeric, cpu_millicores numeric, memory_mb numeric,
            size_gb numeric, quantity numeric, metrics jsonb, metadata jsonb, team_id uuid,
            resource_name text)
    ), claimed AS (
        INSERT INTO waybill.event_keys AS k (project_id, dedupe_key, content_digest, event_id)
        SELECT i.project_id, i.dedupe_key, i.content_digest, i.event_id FROM input i
        ORDER BY 1, 2  -- one lock order for every batch: concurrent batches cannot deadlock
        ON CONFLICT ON CONSTRAINT event_keys_pkey DO NOTHING
        RETURNING k.event_id
    ), stored AS (
        INSERT INTO waybill.usage_events (
            event_id, project_id, event_type, resource_type, resource_id, event_time,
            idempotency_key, replicas, cpu_millicores, memory_mb, size_gb, quantity,
            metrics, metadata, team_id, resource_name)
        SELECT i.event_id, i.project_id, i.event_type, i.resource_type, i.resource_id,
               i.event_time, i.idempotency_key, i.replicas, i.cpu_millicores, i.memory_mb,
               i.size_gb, i.quantity, i.metrics, i.metadata, i.team_id, i.resource_name
          FROM input i JOIN claimed c ON c.event_id = i.event_id
    )
    SELECT (SELECT count(*) FROM input), (SELECT count(*) FROM claimed)
      INTO v_count, v_claimed;

    IF v_claimed = v_count THEN  -- every event is new: the common case, no second look
        RETURN;
    END IF;

    -- Some keys were taken (earlier in this batch, or by an earlier call): answer
    -- with the event first stored under each, unless its content differs, which
    -- means a client reused an idempotency key for another event.
    SELECT array_agg((i.n - 1)::integer ORDER BY i.n),
           array_agg(k.event_id ORDER BY i.n),
           array_agg((i.n - 1)::integer ORDER BY i.n) FILTER (WHERE k.content_digest <> i.content_digest)
      INTO v_ordinals, v_ids, v_conflicts
      FROM ROWS FROM (json_to_recordset(p_events)
               AS (event_id uuid, project_id uuid, dedupe_key uuid, content_digest uuid))
               WITH ORDINALITY AS i(event_id, project_id, dedupe_key, content_digest, n)
      JOIN waybill.event_keys k ON k.project_id = i.project_id AND k.dedupe_key = i.dedupe_key
     WHERE k.event_id <> i.event_id;
    IF v_conflicts IS NOT NULL THEN
        RAISE EXCEPTION 'idempotency_key already used for an event with different content'
            USING ERRCODE = 'WB409', DETAIL = json_build_object('indexes', v_conflicts)::text;
    END IF;
    RETURN QUERY SELECT * FROM unnest(v_ordinals, v_ids);
END
$$;
