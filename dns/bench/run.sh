#!/bin/sh
# podnet-dns vs NSD with dnsperf on loopback, 10k-service RSS/startup and
# store-to-answer latency; prints markdown tables. Needs dnsperf and nsd.
set -eu
cd "$(dirname "$0")/../.."
exec cargo bench -p podnet-dns --bench dnsperf
