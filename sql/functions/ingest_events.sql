-- waybill.ingest_events: store a batch of validated events exactly once.
--
-- Inputs: parallel arrays, one element per event, in the order the client sent
-- them. Output: one row per input (ordinal, event_id, duplicate); a duplicate
-- carries the event_id of the event first stored under that key, whether it came
-- earlier in this batch or in an earlier call.
-- Side effects: inserts into event_keys and usage_events, atomically (one
-- statement from the caller: all rows or none).
-- Errors: WB409 when an idempotency key was already used for different content
-- (DETAIL holds {"indexes": [...]}, the offending ordinals, 0-based).
CREATE OR REPLACE FUNCTION waybill.ingest_events(
    p_event_ids uuid[], p_project_ids uuid[], p_event_types waybill.event_type[],
    p_resource_types text[], p_resource_ids text[], p_event_times timestamptz[],
    p_idempotency_keys text[], p_dedupe_keys uuid[], p_content_digests uuid[],
    p_replicas numeric[], p_cpu_millicores numeric[], p_memory_mb numeric[],
    p_size_gb numeric[], p_quantities numeric[], p_metrics jsonb[], p_metadata jsonb[],
    p_team_ids uuid[], p_resource_names text[]
) RETURNS TABLE (ordinal integer, event_id uuid, duplicate boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_count     integer := coalesce(array_length(p_event_ids, 1), 0);
    v_claimed   integer;
    v_ids       uuid[];
    v_dups      boolean[];
    v_conflicts integer[];
BEGIN
    WITH claimed AS (
        INSERT INTO waybill.event_keys AS k (project_id, dedupe_key, content_digest, event_id)
        SELECT * FROM unnest(p_project_ids, p_dedupe_keys, p_content_digests, p_event_ids)
        ORDER BY 1, 2  -- one lock order for every batch: concurrent batches cannot deadlock
        ON CONFLICT ON CONSTRAINT event_keys_pkey DO NOTHING
        RETURNING k.event_id
    ), stored AS (
        INSERT INTO waybill.usage_events (
            event_id, project_id, event_type, resource_type, resource_id, event_time,
            idempotency_key, replicas, cpu_millicores, memory_mb, size_gb, quantity,
            metrics, metadata, team_id, resource_name)
        SELECT t.* FROM unnest(
            p_event_ids, p_project_ids, p_event_types, p_resource_types, p_resource_ids,
            p_event_times, p_idempotency_keys, p_replicas, p_cpu_millicores, p_memory_mb,
            p_size_gb, p_quantities, p_metrics, p_metadata, p_team_ids, p_resource_names)
            AS t(event_id, project_id, event_type, resource_type, resource_id, event_time,
                 idempotency_key, replicas, cpu_millicores, memory_mb, size_gb, quantity,
                 metrics, metadata, team_id, resource_name)
        JOIN claimed c ON c.event_id = t.event_id
    )
    SELECT count(*) INTO v_claimed FROM claimed;

    IF v_claimed = v_count THEN  -- every event is new: the common case, no second look
        RETURN QUERY SELECT (n - 1)::integer, id, false
                     FROM unnest(p_event_ids) WITH ORDINALITY AS t(id, n);
        RETURN;
    END IF;

    -- Some keys were taken (earlier in this batch, or by an earlier call): answer
    -- with the event first stored under each, unless its content differs, which
    -- means a client reused an idempotency key for another event.
    SELECT array_agg(k.event_id ORDER BY i.n),
           array_agg(k.event_id <> i.event_id ORDER BY i.n),
           array_agg((i.n - 1)::integer ORDER BY i.n) FILTER (WHERE k.content_digest <> i.content_digest)
      INTO v_ids, v_dups, v_conflicts
      FROM unnest(p_event_ids, p_project_ids, p_dedupe_keys, p_content_digests)
               WITH ORDINALITY AS i(event_id, project_id, dedupe_key, content_digest, n)
      JOIN waybill.event_keys k ON k.project_id = i.project_id AND k.dedupe_key = i.dedupe_key;
    IF v_conflicts IS NOT NULL THEN
        RAISE EXCEPTION 'idempotency_key already used for an event with different content'
            USING ERRCODE = 'WB409', DETAIL = json_build_object('indexes', v_conflicts)::text;
    END IF;
    RETURN QUERY SELECT (n - 1)::integer, id, dup
                 FROM unnest(v_ids, v_dups) WITH ORDINALITY AS t(id, dup, n);
END
$$;
