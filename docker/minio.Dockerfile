# MinIO server, built from MinIO's source at a pinned release: MinIO publishes source only since
# October 2025 (no images for the fix of CVE-2025-62506, RELEASE.2025-10-15T17-29-55Z), so the
# in-cluster store runs this image (k8s/components/minio). The build context is unused.
#   make image-minio      # ghcr.io/fdshpo/minio:$(MINIO_RELEASE); push it, then pin its digest
# A newer release: change MINIO_RELEASE here and newTag in k8s/components/minio/kustomization.yaml
# (tests/test_k8s.py checks that they agree).
ARG GO_VERSION=1.24
ARG MINIO_RELEASE=RELEASE.2025-10-15T17-29-55Z

FROM golang:${GO_VERSION}-bookworm AS build
ARG MINIO_RELEASE
WORKDIR /src
# DL3062 takes `go run buildscripts/gen-ldflags.go` (MinIO's own version-stamping script, in the
# pinned checkout) for an unpinned remote package.
# hadolint ignore=DL3062
RUN git clone --depth 1 --branch "${MINIO_RELEASE}" https://github.com/minio/minio.git . \
    && CGO_ENABLED=0 go build -trimpath \
       -ldflags "-s -w $(go run buildscripts/gen-ldflags.go)" -o /out/minio .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/minio /usr/bin/minio
USER 1000
EXPOSE 9000
ENTRYPOINT ["/usr/bin/minio"]
