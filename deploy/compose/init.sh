#!/bin/sh
# Create keys, certificates, node configs and the signed trust bundle for the
# compose federation, with the credex CLI only, and the Kafka broker's certificate
# and passwords (an admin, one SCRAM principal per node). Run once from this folder:
#   ./init.sh && docker compose up
# The nodes (uid 10001) never read these files directly: compose's private-keys step copies
# each node's private files into a volume of its own, owned by 10001 with mode 0600 (the
# node refuses keys that others can read). Kafka and kafka-setup (uid 1000) read theirs
# directly; on a host where you are not uid 1000, after this run
#   sudo chown 1000 secrets/kafka/* secrets/*/kafka.password
# (and run init.sh again with sudo only).
set -eu
cd "$(dirname "$0")"
CREDEX=${CREDEX:-credex}
mkdir -p secrets
# A random password, written once, readable by its owner only.
password() { [ -f "$1" ] || (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$1"); }
[ -f secrets/federation/signing.key ] || $CREDEX keys init --dir secrets/federation
[ -f secrets/pseudonym.key ] || $CREDEX keys pseudonym --out secrets/pseudonym.key
[ -f secrets/ca/ca.crt ] || $CREDEX tls ca --dir secrets/ca --name "yrd federation CA"
[ -f secrets/draft.json ] || $CREDEX trust new secrets/draft.json --federation yrd --tls-ca secrets/ca/ca.crt
for origin in 310000 320000; do
  dir=secrets/$origin
  mkdir -p $dir
  password $dir/kafka.password  # the node's SCRAM password; kafka-setup creates User:credex-$origin with it
  [ -f $dir/keys/signing.key ] || $CREDEX keys init --dir $dir/keys
  [ -f $dir/tls/node.crt ] || $CREDEX tls issue --ca-dir secrets/ca --name $origin --host node-$origin --out-dir $dir/tls
  $CREDEX trust add-member secrets/draft.json --origin $origin --name $origin \
    --endpoint node-$origin:50051 --public-key $dir/keys/signing.pub --tls-cert $dir/tls/node.crt
done
$CREDEX trust sign secrets/draft.json --key secrets/federation/signing.key --out secrets/bundle.json
# The broker: a certificate under the federation CA, and the admin that kafka-setup uses.
mkdir -p secrets/kafka
[ -f secrets/kafka/node.crt ] || $CREDEX tls issue --ca-dir secrets/ca --name kafka --host kafka --out-dir secrets/kafka
[ -f secrets/kafka/broker.pem ] || (umask 077 && cat secrets/kafka/node.key secrets/kafka/node.crt > secrets/kafka/broker.pem)
password secrets/kafka/admin.password
admin=$(cat secrets/kafka/admin.password)
jaas="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin\""
(
  umask 077
  echo "KAFKA_LISTENER_NAME_BROKER_PLAIN_SASL_JAAS_CONFIG='$jaas user_admin=\"$admin\";'" > secrets/kafka/broker.env
  cat > secrets/kafka/admin.properties <<EOF
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=$jaas;
ssl.truststore.type=PEM
ssl.truststore.location=/etc/kafka/secrets/ca.crt
EOF
)
echo "secrets ready; now: docker compose up"
