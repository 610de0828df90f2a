#!/bin/sh
# One-shot set-up of a fresh deployment; safe to run again (each step leaves what exists alone):
#   1. the session-signing key file, when CONDENSE_NEW_SECRET_KEY_FILE names one that does not exist yet (compose:
#      the web replicas then read it through CONDENSE_SECRET_KEY_FILE);
#   2. the demo pool (`condense pool demo`: 4,500 packaged real images, built once, into CONDENSE_BLOB_URL);
#   3. the first admin user, CONDENSE_ADMIN_USER (default "admin"), when no user of that name exists.
# No token is made here (it would end up in logs): create one with `condense token create admin`, shown once.
# Run by the compose service "bootstrap" and the Kubernetes Job "condense-bootstrap".
set -eu
admin="${CONDENSE_ADMIN_USER:-admin}"

key_file="${CONDENSE_NEW_SECRET_KEY_FILE:-}"
if [ -n "$key_file" ] && [ ! -s "$key_file" ]; then
  umask 077
  python -c 'import secrets; print(secrets.token_urlsafe(48))' > "$key_file.tmp.$$"
  mv "$key_file.tmp.$$" "$key_file"  # a rename: a reader never sees half a key
  echo "bootstrap: session key written to $key_file"
elif [ -n "$key_file" ]; then
  echo "bootstrap: session key $key_file exists; kept"
fi

condense pool demo --quiet

condense user add "$admin" --admin --if-missing
echo "bootstrap: done (an API token for $admin: condense token create $admin)"
