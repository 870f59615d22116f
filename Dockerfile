# syntax=docker/dockerfile:1
# careplane container image: a static (musl) binary on distroless "static" (CA certificates
# and tzdata, no shell, no package manager), running as the non-root user 65532.
#
#   docker build -t careplane .                  # builds from source (the default stage)
#   docker build --target test .                 # also runs the unit tests and checks the binary
#   docker run --rm -v "$PWD/careplane:/work:ro" careplane validate /work
#
# The release workflow builds the "prebuilt" stage from the binaries it already built
# (dist/linux-<arch>/careplane), for linux/amd64 and linux/arm64.
# Pin the base images by digest (FROM image:tag@sha256:...) in your own builds.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target "$(uname -m)-unknown-linux-musl" \
 && cp "target/$(uname -m)-unknown-linux-musl/release/careplane" /careplane

FROM build AS test
RUN cargo test --release --locked --target "$(uname -m)-unknown-linux-musl" --lib \
 && /careplane --version \
 && /careplane validate examples/clinic

FROM gcr.io/distroless/static-debian12:nonroot AS prebuilt
ARG TARGETARCH
COPY --chmod=0755 dist/linux-${TARGETARCH}/careplane /usr/local/bin/careplane
USER 65532:65532
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/careplane"]
CMD ["--help"]

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /careplane /usr/local/bin/careplane
USER 65532:65532
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/careplane"]
CMD ["--help"]
