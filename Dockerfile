# syntax=docker/dockerfile:1
#
#   docker build -t streamgate --build-arg VERSION=$(git describe --tags --always) .
#
# Modules come from GOPROXY (default https://proxy.golang.org): pass
# --build-arg GOPROXY=https://your.mirror to build behind a module mirror. go.sum
# pins every module, so the checksum database is not needed.
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ARG GOPROXY
# go.mod may ask for a newer patch release than the image has: let go fetch
# that toolchain through the same proxy instead of failing.
ENV GOTOOLCHAIN=auto CGO_ENABLED=0
# The module download is its own layer: it is redone only when go.mod or go.sum
# change.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
ARG VERSION=dev
# Static binary (distroless/static has no libc); the version comes from
# VERSION, not from the VCS state of the build context.
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -mod=readonly -buildvcs=false -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/streamgate ./cmd/streamgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/streamgate /streamgate
USER nonroot:nonroot
# 8080: downloads (listen). 9090: metrics and the admin API (admin.listen);
# keep it off the public network.
EXPOSE 8080 9090
ENTRYPOINT ["/streamgate"]
CMD ["serve", "--config", "/etc/streamgate/config.yaml"]
