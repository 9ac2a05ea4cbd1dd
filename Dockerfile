# syntax=docker/dockerfile:1
# The Portcullis container image:
#
#   docker build -t portcullis .
#
# The binary is built with exactly the command .ci/run checks on every change
# (`cargo build --release --locked --bin portcullis`), and runs as a non-root numeric user on a
# distroless base: glibc, CA certificates and nothing else (no shell, no package manager).

# Builder: the Rust release CI uses, on Debian 12 so that its glibc matches the runtime's. Pin a digest
# too where your registry tooling can keep it current (`rust:1.95.0-bookworm@sha256:…`).
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# aws-lc-sys (the crypto under rustls) compiles C: gcc and make come with the image, cmake is
# installed for the aws-lc build configurations that use it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target directory between builds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portcullis \
 && install -m 0755 target/release/portcullis /portcullis

FROM ${RUNTIME_IMAGE}
COPY --from=build /portcullis /usr/local/bin/portcullis
# distroless "nonroot" (the chart's runAsUser/runAsGroup). Ports 80 and 443 need either
# NET_BIND_SERVICE or net.ipv4.ip_unprivileged_port_start=0 (Docker sets the latter by default; the Helm
# chart sets it for the pod).
USER 65532:65532
# HTTP, HTTPS, admin (/healthz, /readyz, /metrics)
EXPOSE 80 443 10254
ENTRYPOINT ["/usr/local/bin/portcullis"]
