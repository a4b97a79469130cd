# syntax=docker/dockerfile:1
#
# primetime service image: `docker build -t primetime .`
# (or `docker compose up --build` with docker-compose.yml).
#
# Build stage: the workspace needs Rust >= 1.85 (edition 2024). librdkafka is
# compiled from source by rdkafka-sys (./configure + make, no cmake; zlib is
# linked statically via the `libz-static` feature, no SSL); the rust:bookworm
# image already has everything that needs (gcc, g++, make, perl).
#
# CPU target: .cargo/config.toml builds x86_64 for x86-64-v3 (AVX2/FMA; H3
# indexing is ~35 % slower without hardware FMA). The resulting image dies
# with SIGILL on CPUs (or emulators) without AVX2. For such hosts, override:
#   docker build --build-arg RUSTFLAGS="-C target-cpu=x86-64" -t primetime .
# (On an arm64 builder the x86_64 setting does not apply.)
# The cache mounts need BuildKit (default since Docker 23 and in `docker compose`).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Empty/unset RUSTFLAGS must not reach cargo: a set-but-empty RUSTFLAGS would
# silently replace the rustflags of .cargo/config.toml.
ARG RUSTFLAGS
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    if [ -z "${RUSTFLAGS:-}" ]; then unset RUSTFLAGS; fi \
    && cargo build --release --locked -p primetime \
    && install -D -m 0755 target/release/primetime /out/primetime

FROM debian:bookworm-slim
# ca-certificates for TLS to external brokers configured via [kafka.client];
# curl only for the container healthcheck on /healthz.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /app primetime
WORKDIR /app
# The default model (models/primetime-v1) is built into the binary; the
# files are shipped too, for --model /app/models/primetime-v1.onnx.
COPY models/primetime-v1.onnx models/primetime-v1.card.json /app/models/
COPY --from=build /out/primetime /usr/local/bin/primetime
USER primetime
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz >/dev/null || exit 1
ENTRYPOINT ["primetime"]
# Default: the service with its embedded simulator, reachable from outside
# the container (the binary's own default listens on 127.0.0.1 only).
CMD ["serve", "--http-addr", "0.0.0.0:8080"]
