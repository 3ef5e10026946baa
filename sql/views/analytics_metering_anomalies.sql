-- analytics.metering_anomalies: events metering could not apply as sent
-- (a stop with nothing running, a resize of an unknown volume, an event older
-- than one already received for its resource, ...). Columns: seq (ingestion
-- order), anomaly, project_id, kind, resource_type, resource_id, event_type,
-- event_time, detail.
CREATE OR REPLACE VIEW analytics.metering_anomalies AS
SELECT a.seq, a.anomaly, a.project_id, a.kind, a.resource_type, a.resource_id, a.event_type,
       a.event_time, a.detail
  FROM waybill.metering_anomalies a;
COMMENT ON VIEW analytics.metering_anomalies IS
    'Events metering could not apply as sent; re-derived with every replay. See docs/metering.md.';
