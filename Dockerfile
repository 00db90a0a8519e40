# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .git is not in the context (.dockerignore), so the version comes from
# these (make image passes them from git); empty ones read "devel"/"unknown".
ARG VERSION=""
ARG REVISION=""
ARG BUILD_DATE=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w \
      -X github.com/uplinkhq/uplink/internal/version.Version=${VERSION} \
      -X github.com/uplinkhq/uplink/internal/version.Revision=${REVISION} \
      -X github.com/uplinkhq/uplink/internal/version.BuildDate=${BUILD_DATE}" \
      -o /out/uplink ./cmd/uplink \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/uplink /usr/local/bin/uplink
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
ENV UPLINK_DATA_DIR=/data \
    UPLINK_LISTEN=:4080 \
    UPLINK_ADMIN_LISTEN=:4040
VOLUME ["/data"]
EXPOSE 4080 4040
# No shell in the image: the binary checks /readyz itself, on the admin
# listener that UPLINK_ADMIN_LISTEN (above, or -e) names, over https when
# UPLINK_ADMIN_TLS_CERT is set (add UPLINK_CACERT or
# UPLINK_INSECURE_SKIP_VERIFY=true for a certificate not issued for
# 127.0.0.1). Its own --timeout (5s) ends before Docker's.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --start-interval=2s --retries=3 \
  CMD ["/usr/local/bin/uplink", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/uplink"]
CMD ["serve"]
