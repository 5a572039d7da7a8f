#!/bin/sh
# Create keys, certificates, node configs and the signed trust bundle for the
# compose federation, with the credex CLI only. Run once from this folder:
#   ./init.sh && docker compose up
set -eu
cd "$(dirname "$0")"
CREDEX=${CREDEX:-credex}
mkdir -p secrets
[ -f secrets/federation/signing.key ] || $CREDEX keys init --dir secrets/federation
[ -f secrets/pseudonym.key ] || $CREDEX keys pseudonym --out secrets/pseudonym.key
[ -f secrets/ca/ca.crt ] || $CREDEX tls ca --dir secrets/ca --name "yrd federation CA"
[ -f secrets/draft.json ] || $CREDEX trust new secrets/draft.json --federation yrd --tls-ca secrets/ca/ca.crt
for origin in 310000 320000; do
  dir=secrets/$origin
  [ -f $dir/keys/signing.key ] || $CREDEX keys init --dir $dir/keys
  [ -f $dir/tls/node.crt ] || $CREDEX tls issue --ca-dir secrets/ca --name $origin --host node-$origin --out-dir $dir/tls
  $CREDEX trust add-member secrets/draft.json --origin $origin --name $origin \
    --endpoint node-$origin:50051 --public-key $dir/keys/signing.pub
done
$CREDEX trust sign secrets/draft.json --key secrets/federation/signing.key --out secrets/bundle.json
echo "secrets ready; now: docker compose up"
