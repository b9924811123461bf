# syntax=docker/dockerfile:1
#
# One image for every tradestream subcommand (processors, ingest, api, migrate, topics, registry,
# broker...): `docker run tradestream <subcommand> --help`.
#
#   docker build -t tradestream:dev .
#
# Stage 1 builds the release binary. librdkafka is compiled from source by rdkafka's
# `cmake-build` feature and links the system libcurl, OpenSSL, Cyrus SASL (GSSAPI) and zlib, so
# the builder needs cmake, a C/C++ toolchain and those headers. Stage 2 is Debian slim with only
# the matching runtime libraries, a non-root user, the default models and nothing else.
# SQL migrations (`sql/`) are embedded in the binary by `sqlx::migrate!`, and the Avro schemas
# by `include_str!`: the runtime image needs neither directory.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# hadolint/checkov: versions of Debian build packages are not pinned on purpose: the
# distribution release (bookworm) fixes them, and security updates must come in.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config perl \
      libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and the target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tradestream \
 && install -D -m 0755 target/release/tradestream /out/tradestream

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="tradestream" \
      org.opencontainers.image.description="Streaming trading platform on Kafka: one image, every subcommand" \
      org.opencontainers.image.licenses="see repository" \
      org.opencontainers.image.version="${VERSION}"
# Runtime libraries of the binary (see `ldd`): libcurl, OpenSSL, SASL with GSSAPI, zlib; curl
# itself (it shares libcurl) serves the HEALTHCHECK; tini reaps children and forwards SIGTERM so
# processors drain their in-flight batch.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates curl libcurl4 libssl3 libsasl2-2 libsasl2-modules-gssapi-mit zlib1g tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tradestream \
 && useradd --system --uid 10001 --gid tradestream --home-dir /opt/tradestream \
      --shell /usr/sbin/nologin tradestream
WORKDIR /opt/tradestream
COPY --from=builder /out/tradestream /usr/local/bin/tradestream
# The scorer's default model_dir is the relative `models`: WORKDIR makes it resolve here.
COPY --chown=root:root models/ /opt/tradestream/models/
USER 10001:10001
# Containers listen on every interface (the binary's defaults are loopback-only for laptops).
# Every other setting comes from the environment (see docs/deploy.md).
ENV TRADESTREAM_METRICS_LISTEN=0.0.0.0:9464 \
    TRADESTREAM_REGISTRY_LISTEN=0.0.0.0:8081 \
    TRADESTREAM_LOG_FORMAT=json \
    RUST_LOG=info
# 9464: /metrics, /healthz, /readyz of run/up; 8080: api; 8081: registry.
EXPOSE 9464 8080 8081
# Liveness of the long-running subcommands; one-shot ones (migrate, topics, ingest) finish
# before it matters. Compose and Kubernetes define their own probes per service.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${TRADESTREAM_METRICS_LISTEN##*:}/healthz" || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/tradestream"]
CMD ["--help"]
