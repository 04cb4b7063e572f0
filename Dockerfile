# Release image of the gateway. Build: docker build -t v2fhir .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin v2fhir

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/v2fhir v2fhir && mkdir -p /var/lib/v2fhir/data && chown v2fhir /var/lib/v2fhir/data
COPY --from=build /src/target/release/v2fhir /usr/local/bin/v2fhir
COPY --from=build /src/mappings /var/lib/v2fhir/mappings
WORKDIR /var/lib/v2fhir
USER v2fhir
# In a container the listeners must bind all interfaces; publish the ports deliberately.
ENV V2FHIR_MLLP_LISTEN=0.0.0.0:2575 V2FHIR_HTTP_LISTEN=0.0.0.0:8080 V2FHIR_LOG_FORMAT=json
EXPOSE 2575 8080
ENTRYPOINT ["v2fhir", "serve"]
