#!/bin/sh
# Give one credex node its Kafka principal, its topics and its ACLs:
#   kafka-acls.sh ORIGIN PEER...
# The node (principal User:credex-ORIGIN, SCRAM-SHA-512) writes only its own topics
# credex.ORIGIN.*, reads them back (the relay checks that the broker kept what it
# acknowledged), reads its peers' topics and commits offsets in its own consumer
# group. It gets nothing on any other topic, and no cluster rights: it cannot create
# or read another member's topics, nor grant itself more.
# Run with the cluster admin's client config; used by deploy/compose (kafka-setup)
# and by the Helm chart's set-up Job, so both grant exactly the same.
#
# Environment: KAFKA_SERVER (bootstrap), ADMIN_CONFIG (admin client properties),
# PASSWORD_FILE (the node's SCRAM password; unset: the user exists already, e.g.
# made by an operator), PARTITIONS, REPLICATION, KAFKA_BIN (the Kafka tools).
set -eu
[ $# -ge 1 ] || { echo "usage: $0 ORIGIN PEER..." >&2; exit 2; }
origin=$1
shift
BIN=${KAFKA_BIN:-/opt/kafka/bin}
SERVER=${KAFKA_SERVER:?set KAFKA_SERVER to the brokers, e.g. kafka:9094}
ADMIN=${ADMIN_CONFIG:?set ADMIN_CONFIG to the admin client properties}
PARTITIONS=${PARTITIONS:-4}
REPLICATION=${REPLICATION:-1}
user="credex-$origin"

# The password never goes on a command line (anyone on the host reads those in
# /proc/*/cmdline): kafka-configs.sh reads it from a properties file of ours, mode
# 0600, removed on exit. The file is read as Java properties, so a backslash and
# spaces are escaped there; commas, brackets and = need nothing. Leading and trailing
# white space is dropped, as the node drops it when it reads the same file.
if [ -n "${PASSWORD_FILE:-}" ]; then
  password=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$PASSWORD_FILE")
  [ -n "$password" ] || { echo "$PASSWORD_FILE is empty; write the node's SCRAM password into it" >&2; exit 2; }
  if [ "$(printf '%s' "$password" | LC_ALL=C tr -d ' -~' | wc -c | tr -d ' ')" != 0 ]; then
    echo "$PASSWORD_FILE must hold the password on one line, in printable ASCII only" >&2
    exit 2
  fi
  scram_config=$(umask 077 && mktemp)
  trap 'rm -f "$scram_config"' EXIT
  trap 'exit 1' HUP INT TERM
  printf 'SCRAM-SHA-512=password=%s\n' "$(printf '%s' "$password" | sed -e 's/\\/\\\\/g' -e 's/ /\\ /g')" \
    > "$scram_config"
  "$BIN/kafka-configs.sh" --bootstrap-server "$SERVER" --command-config "$ADMIN" --alter \
    --entity-type users --entity-name "$user" --add-config-file "$scram_config"
fi

topic() {
  "$BIN/kafka-topics.sh" --bootstrap-server "$SERVER" --command-config "$ADMIN" --create --if-not-exists \
    --topic "$1" --partitions "$2" --replication-factor "$REPLICATION"
}
# Checkpoints keep one partition: they are read in the order they were signed.
topic "credex.$origin.events" "$PARTITIONS"
topic "credex.$origin.checkpoints" 1

acl() {
  "$BIN/kafka-acls.sh" --bootstrap-server "$SERVER" --command-config "$ADMIN" --add \
    --allow-principal "User:$user" "$@"
}
acl --operation Write --operation Read --operation Describe --operation Create \
  --resource-pattern-type prefixed --topic "credex.$origin."
acl --operation Read --operation Describe --group "credex-intake-$origin"
for peer in "$@"; do
  [ "$peer" = "$origin" ] && continue
  acl --operation Read --operation Describe --resource-pattern-type prefixed --topic "credex.$peer."
done
echo "$user: writes credex.$origin.*, reads ${*:-no peers}"
