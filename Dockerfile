# Release image of the gateway. Build: docker build -t v2fhir .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin v2fhir

FROM debian:bookworm-slim
# ca-certificates: TLS to an upstream FHIR server; curl: the container healthcheck.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home /var/lib/v2fhir v2fhir && mkdir -p /var/lib/v2fhir/data && chown v2fhir /var/lib/v2fhir/data
COPY --from=build /src/target/release/v2fhir /usr/local/bin/v2fhir
COPY --from=build /src/mappings /var/lib/v2fhir/mappings
WORKDIR /var/lib/v2fhir
USER v2fhir
# In a container the listeners must bind all interfaces; publish the ports deliberately.
ENV V2FHIR_MLLP_LISTEN=0.0.0.0:2575 V2FHIR_HTTP_LISTEN=0.0.0.0:8080 V2FHIR_LOG_FORMAT=json
EXPOSE 2575 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s CMD ["curl", "-fsS", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["v2fhir", "serve"]
