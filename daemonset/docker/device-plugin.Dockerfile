# gpupack device plugin image.
#   docker build -f daemonset/docker/device-plugin.Dockerfile -t ghcr.io/gpupack/gpupack-device-plugin:0.1.0 .
#
# NVML is not in the image: the NVIDIA container runtime mounts the host
# driver's libnvidia-ml.so.1 into the container (NVIDIA_DRIVER_CAPABILITIES
# =utility, set in the DaemonSet), and the plugin loads it at run time. The
# runtime image therefore only needs glibc and the dynamic loader.
FROM docker.io/library/rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p device-plugin --bin gpupack-device-plugin \
 && install -D target/release/gpupack-device-plugin /out/gpupack-device-plugin

FROM docker.io/library/debian:12-slim AS runtime
COPY --from=build /out/gpupack-device-plugin /usr/bin/gpupack-device-plugin
# Root is needed only to create sockets in kubelet's root-owned
# /var/lib/kubelet/device-plugins; the DaemonSet drops every capability.
USER 0
ENTRYPOINT ["/usr/bin/gpupack-device-plugin"]
