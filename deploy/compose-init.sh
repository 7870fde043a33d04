#!/bin/sh
# compose.yaml's one-shot steps, so that `docker compose up` is the only step. Safe to run
# again: nothing made before is made again.
#
#   compose-init.sh trust   before anything starts: the PostgreSQL password and database
#                           URL (in $SECRETS_DIR) and the fleet's NATS trust (in $FLEET_DIR)
#   compose-init.sh enroll  once the controller answers: one enrollment token per region
#                           without one (in $ENROLL_DIR), made with a short-lived API key
#                           limited to fleet:admin that only this step ever sees
#
# Runs as the image's user (uid 10001). tests/deploy/test_compose.py runs both steps here.
set -eu

SECRETS_DIR=${SECRETS_DIR:-/run/probefleet-secrets}
FLEET_DIR=${FLEET_DIR:-/var/lib/probefleet/fleet}
ENROLL_DIR=${ENROLL_DIR:-/run/probefleet-enroll}
NATS_HOSTNAME=${NATS_HOSTNAME:-nats}
NATS_RESOLVER_DIR=${NATS_RESOLVER_DIR:-/data/jwt}
POSTGRES_HOST=${POSTGRES_HOST:-postgres}
REGIONS=${REGIONS:-us-east eu-west ap-south}

trust() {
    umask 077
    mkdir -p "$SECRETS_DIR"
    if [ ! -s "$SECRETS_DIR/postgres_password" ]; then
        # 32 hex characters from the kernel's generator (no shell quoting issues in a URL).
        python -c 'import secrets; print(secrets.token_hex(16))' > "$SECRETS_DIR/postgres_password.new"
        mv "$SECRETS_DIR/postgres_password.new" "$SECRETS_DIR/postgres_password"
        echo "compose-init: made the PostgreSQL password"
    fi
    if [ ! -s "$SECRETS_DIR/database_url" ]; then
        printf 'postgresql://probefleet:%s@%s:5432/probefleet\n' \
            "$(cat "$SECRETS_DIR/postgres_password")" "$POSTGRES_HOST" > "$SECRETS_DIR/database_url"
        echo "compose-init: made the database URL"
    fi
    # The postgres image reads its password file as root, before it drops to its own user;
    # the controller (this uid) reads the URL. Nothing else mounts this volume.
    chmod 0400 "$SECRETS_DIR/postgres_password" "$SECRETS_DIR/database_url"
    # Re-uses every key it finds: running it again changes nothing.
    probefleet controller init-fleet --dir "$FLEET_DIR" --hostname "$NATS_HOSTNAME" \
        --resolver-dir "$NATS_RESOLVER_DIR" > /dev/null
    echo "compose-init: the fleet's NATS trust is in $FLEET_DIR"
}

enroll() {
    umask 077
    mkdir -p "$ENROLL_DIR"
    missing=""
    for region in $REGIONS; do
        [ -s "$ENROLL_DIR/$region" ] || missing="$missing $region"
    done
    if [ -z "$missing" ]; then
        echo "compose-init: every region has its enrollment token"
        return 0
    fi
    # The key on stdout (kept in this shell only), its scopes on stderr.
    PROBEFLEET_API_KEY=$(probefleet controller create-key --name compose-enroll --scope fleet:admin \
        --expires-days 1)
    export PROBEFLEET_API_KEY
    for region in $missing; do
        # One probe per region enrolls with it; more (docker compose up --scale) need a
        # token of their own: `probefleet region enroll REGION`.
        probefleet region enroll "$region" --uses 1 --expires 7d --token-only > "$ENROLL_DIR/$region.new"
        mv "$ENROLL_DIR/$region.new" "$ENROLL_DIR/$region"
        echo "compose-init: made the enrollment token of region $region"
    done
}

case "${1:-}" in
    trust) trust ;;
    enroll) enroll ;;
    *) echo "usage: compose-init.sh trust|enroll" >&2; exit 2 ;;
esac
