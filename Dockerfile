# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/uplink ./cmd/uplink \
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
ENTRYPOINT ["/usr/local/bin/uplink"]
CMD ["serve"]
