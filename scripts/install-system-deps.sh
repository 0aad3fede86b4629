#!/usr/bin/env bash
# Installs the Debian packages that tests and benchmarks use: etcd-server (a real etcd to
# compare against), etcd-client (etcdctl, driven against our store), haproxy (the proxy
# benchmark's reference), iproute2 (`ip netns` for multi-host tests) and nftables (`nft`, the
# kernel rules of `k8semu chaos --faults partition`, see docs/chaos.md), chromium and
# chromium-driver (tests/dashboard drive the web dashboard headless with Selenium). Idempotent.
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: need ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
