#!/bin/sh
# make_tls.sh DIR [USER PASSWORD]: throwaway TLS material for test_mqtt's TLS broker (or for trying
# scadles-publish and the MQTT source against a local TLS mosquitto by hand): a CA, a server
# certificate for localhost / 127.0.0.1 signed by it, a client certificate, and with USER and
# PASSWORD a mosquitto password file. EC P-256 keys (fast), valid for two days, world-readable
# (mosquitto may drop to its own user before reading them). Needs openssl; mosquitto_passwd for
# the password file. Exit status 0 when everything was made.
set -eu
d=${1:?usage: make_tls.sh DIR [USER PASSWORD]}
mkdir -p "$d"
q() { "$@" >/dev/null 2>&1; }
key() { q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
key "$d/ca.key"
q openssl req -x509 -new -key "$d/ca.key" -out "$d/ca.crt" -days 2 -subj /CN=scadles-test-ca
key "$d/server.key"
q openssl req -new -key "$d/server.key" -out "$d/server.csr" -subj /CN=localhost
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$d/server.ext"
q openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/server.crt" \
  -days 2 -extfile "$d/server.ext"
key "$d/client.key"
q openssl req -new -key "$d/client.key" -out "$d/client.csr" -subj /CN=scadles-test-client
q openssl x509 -req -in "$d/client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/client.crt" -days 2
if [ $# -ge 3 ]; then
  : > "$d/passwd"
  q mosquitto_passwd -b "$d/passwd" "$2" "$3"
fi
chmod 755 "$d"
chmod 644 "$d"/*
