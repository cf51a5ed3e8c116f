#!/usr/bin/env bash
# Start the mall (dtmx + user rpc + user-score rpc + user-api) on embedded defaults:
#   bash scripts/run.sh          # SQLite, no Redis, fixed addresses
#   bash scripts/run.sh --full   # MySQL/MariaDB, Redis, etcd (see mall/README.md)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -f scripts/bootstrap.sh ]]; then
  bash scripts/bootstrap.sh
fi
exec .venv/bin/python -m mall run "$@"
