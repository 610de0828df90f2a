#!/bin/sh
# The image's entry point: runs its arguments (default `condense serve`) after one preparation step.
#
# CONDENSE_SECRET_KEY_FILE: a file holding the session-signing key (a compose secret, a mounted Kubernetes Secret, a
# volume the bootstrap service wrote). When it is set and CONDENSE_SECRET_KEY is not, the key is read from it, so every
# web replica that mounts the same file signs cookies with the same key.
set -eu
if [ -n "${CONDENSE_SECRET_KEY_FILE:-}" ] && [ -z "${CONDENSE_SECRET_KEY:-}" ]; then
  if [ ! -r "$CONDENSE_SECRET_KEY_FILE" ]; then
    echo "entrypoint: CONDENSE_SECRET_KEY_FILE=$CONDENSE_SECRET_KEY_FILE is not a readable file" >&2
    exit 2
  fi
  CONDENSE_SECRET_KEY=$(tr -d '\r\n' < "$CONDENSE_SECRET_KEY_FILE")
  if [ -z "$CONDENSE_SECRET_KEY" ]; then  # unset, each replica would make its own key: refuse instead
    echo "entrypoint: CONDENSE_SECRET_KEY_FILE=$CONDENSE_SECRET_KEY_FILE is empty" >&2
    exit 2
  fi
  export CONDENSE_SECRET_KEY
fi
exec "$@"
