# The SentinelRemedy daemon. Two stages: a Rust toolchain builds the release binary, a small
# Debian runtime runs it as a non-root user. Image names are build arguments, so a machine with a
# registry uses the official images and one without uses local builds (scripts/build_images.sh,
# which also puts an already-built binary at prebuilt/ so the first stage need not compile).
# Works with the classic builder and with BuildKit.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# Lets scripts/build_images.sh remove this stage's image (the classic builder keeps it).
LABEL org.sentinel-remedy.stage=build
WORKDIR /src
COPY . .
RUN if [ -x prebuilt/sentinel-remedy ]; then \
        install -D prebuilt/sentinel-remedy /out/sentinel-remedy; \
    else \
        cargo build --release --locked && install -D target/release/sentinel-remedy /out/sentinel-remedy; \
    fi

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/sentinel --create-home sentinel
COPY --from=build /out/sentinel-remedy /usr/local/bin/sentinel-remedy
# Non-root. To use the Docker socket, add the socket's group (compose: group_add: [DOCKER_GID]).
USER 10001:10001
ENV SENTINEL_STATE_DIR=/var/lib/sentinel/state \
    ARCHIVE_DIR=/var/lib/sentinel/incidents \
    SENTINEL_LISTEN=0.0.0.0:9187 \
    SENTINEL_LOG_FORMAT=json
VOLUME /var/lib/sentinel
EXPOSE 9187
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["sentinel-remedy", "healthcheck"]
ENTRYPOINT ["sentinel-remedy"]
CMD ["run"]
