# exstream with ffmpeg (Debian's), as one non-root process.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY telemetry ./telemetry
RUN pip install --no-cache-dir . && useradd --create-home exstream && mkdir /data \
    && chown exstream /data
USER exstream
EXPOSE 8410
CMD ["exstream", "serve", "--config", "/data/channels.toml"]
