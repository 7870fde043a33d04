#!/bin/sh
# Move each Dockerfile's pinned base (ARG PYTHON_IMAGE=name:tag@sha256:...) to the digest
# its tag names today, with skopeo (no daemon needed) or docker buildx. Needs the registry;
# run by `make refresh-digests`, then rebuild and commit the changed Dockerfiles.
set -eu

digest() {
    if command -v skopeo >/dev/null 2>&1; then
        skopeo inspect --raw "docker://docker.io/library/$1" | sha256sum | cut -d' ' -f1 | sed 's/^/sha256:/'
    elif command -v docker >/dev/null 2>&1; then
        docker buildx imagetools inspect --format '{{json .Manifest.Digest}}' "$1" | tr -d '"'
    else
        echo "refresh-digests: needs skopeo or docker buildx" >&2
        exit 1
    fi
}

for file in "$@"; do
    line=$(grep -E '^ARG PYTHON_IMAGE=' "$file")
    image=${line#ARG PYTHON_IMAGE=}
    tag=${image%@*}
    new=$(digest "$tag")
    case $new in
        sha256:????????????????????????????????????????????????????????????????) ;;
        *) echo "refresh-digests: $tag: no digest ($new)" >&2; exit 1 ;;
    esac
    sed -i "s|^ARG PYTHON_IMAGE=.*|ARG PYTHON_IMAGE=$tag@$new|" "$file"
    echo "$file: $tag@$new"
done
