# The Waybill service: `waybill serve` by default, `waybill migrate` for the one-shot job.
FROM python:3.11-slim-bookworm
WORKDIR /srv/waybill
COPY pyproject.toml README.md ./
COPY app ./app
COPY sql ./sql
RUN pip install --no-cache-dir .
ENV API_HOST=0.0.0.0
ENTRYPOINT ["waybill"]
CMD ["serve"]
