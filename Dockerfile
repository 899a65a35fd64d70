# syntax=docker/dockerfile:1
# The image the manifests of `scaleout k8s` name ([service] image, default
# scaleout:<workspace version>, e.g. 0.1.0):
#   docker build -t scaleout:0.1.0 .
# One binary serves every role (`scaleout shop` in the pods). Multi-stage: the toolchain
# and the sources never reach the runtime image.

# Build: the release binary. The bundled SQLite and the tree-sitter grammars need a C
# compiler, which the rust image has. No TLS library is linked (no OpenSSL at run time).
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p scaleout \
    && install -m 0755 target/release/scaleout /scaleout

# Run: distroless with glibc and libgcc only (no shell, no package manager), as the
# `nonroot` user 65532, the uid the manifests' securityContext names. The root
# filesystem can be mounted read-only: nothing is written outside /tmp and /data.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /scaleout /usr/local/bin/scaleout
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/scaleout"]
CMD ["shop", "--listen", "0.0.0.0:8080"]
