#!/bin/sh
# Container start: make sure the SAM checkpoint is in checkpoints/ (/app/checkpoints, the
# volume; the first start of the web service downloads it, md5-checked), then run the command.
# SAM_ENGINE=grabcut needs no weights; SAM_CHECKPOINT points at a file you mounted;
# SAM_SKIP_DOWNLOAD=true is for services that wait for another one to fetch it (the worker).
set -eu
if [ "${SAM_ENGINE:-sam}" = sam ] && [ -z "${SAM_CHECKPOINT:-}" ] && [ "${SAM_SKIP_DOWNLOAD:-false}" != true ]; then
    python -m sam_model.download "${SAM_MODEL:-sam2.1_hiera_tiny}" --dir checkpoints || {
        echo "entrypoint: no ${SAM_MODEL:-sam2.1_hiera_tiny} checkpoint; SAM cannot start." >&2
        echo "entrypoint: place the file in the checkpoints volume, or set SAM_ENGINE=grabcut to run without weights." >&2
        exit 2
    }
fi
exec "$@"
