# Multi-stage build: the official Rust image compiles, a distroless image runs (no shell, CA
# certificates included, non-root). The build command is the one CI runs.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests/kit ./tests/kit
RUN cargo build --release --locked --bin tenantcred

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tenantcred /usr/local/bin/tenantcred
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tenantcred"]
CMD ["run"]
