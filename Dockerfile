# Multi-stage build: the builder runs the same build line as CI
# (scripts/build.sh); the runtime image is distroless static, non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN VERSION=${VERSION} scripts/build.sh /out/switchyard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/switchyard /usr/local/bin/switchyard
COPY config.yaml /etc/switchyard/config.yaml
ENV SWITCHYARD_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER nonroot:nonroot
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/switchyard", "-healthcheck", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/switchyard", "-config", "/etc/switchyard/config.yaml"]
