# sedmon server image: sedmon-core[analysis] + sedmon-server (migrations inside the wheel).
FROM python:3.11-slim AS build
WORKDIR /src
COPY shared/ shared/
COPY server/ server/
COPY migrations/ migrations/
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./shared ./server

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 sedmon && mkdir -p /var/lib/sedmon \
    && chown sedmon /var/lib/sedmon
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --find-links /wheels sedmon-server && rm -rf /wheels
USER sedmon
ENV SEDMON_HOME=/var/lib/sedmon
EXPOSE 8000
CMD ["sedmon-server", "serve", "--host", "0.0.0.0", "--port", "8000"]
