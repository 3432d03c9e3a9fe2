# gpupack scheduler extender image.
#   docker build -f daemonset/docker/scheduler-ext.Dockerfile -t ghcr.io/gpupack/gpupack-scheduler-ext:0.1.0 .
FROM docker.io/library/rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p scheduler-ext --bin gpupack-scheduler-ext \
 && install -D target/release/gpupack-scheduler-ext /out/gpupack-scheduler-ext

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/gpupack-scheduler-ext /usr/bin/gpupack-scheduler-ext
USER 65532:65532
ENTRYPOINT ["/usr/bin/gpupack-scheduler-ext"]
