-- The service reads usage, and issues and revokes project API keys.
GRANT SELECT ON waybill.hourly_usage, waybill.daily_usage TO waybill_app;
GRANT SELECT, INSERT, UPDATE ON waybill.project_api_keys TO waybill_app;
GRANT EXECUTE ON FUNCTION waybill.project_exists(uuid) TO waybill_app;
