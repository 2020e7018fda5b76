#!/usr/bin/env bash
# "make run": start a local mosquitto on 127.0.0.1:1883 unless a broker
# already answers there (or the configuration names another broker), then
# the example server; Ctrl-C stops what this script started, by PID.
set -u
here=$(cd "$(dirname "$0")" && pwd)
conf=${1:-$here/civetweb.conf}
bin=${CIVETWEB_MQTT_BIN:-$here/civetweb-mqtt}
broker_pid=""
server_pid=""

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

stop_all() {
	trap - INT TERM
	[ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	[ -n "$broker_pid" ] && kill -TERM "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
	exit "${1:-0}"
}
trap 'stop_all 0' INT TERM

# Which broker does the configuration name? (first MQTT_BROKER_URL, any case)
url=$(awk 'tolower($1)=="mqtt_broker_url" {print $2; exit}' "$conf")
url=${url:-localhost}
hostport=${url#*://}
hostport=${hostport%%,*}
hostport=${hostport%%/*}
host=${hostport%%:*}
port=1883
[ "$hostport" != "$host" ] && port=${hostport##*:}

if [ "$port" = 1883 ] && { [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; }; then
	if answers 127.0.0.1 1883; then
		echo "run: a broker already answers on 127.0.0.1:1883; using it"
	else
		command -v mosquitto >/dev/null || { echo "run: mosquitto is not installed (make deps)"; exit 1; }
		# Its own session: Ctrl-C reaches the server (which stops cleanly,
		# without a will) but not the broker, which is stopped after it.
		setsid mosquitto -c "$here/mosquitto.conf" &
		broker_pid=$!
		for _ in $(seq 100); do answers 127.0.0.1 1883 && break; sleep 0.05; done
		answers 127.0.0.1 1883 || { echo "run: mosquitto did not start"; stop_all 1; }
		echo "run: started mosquitto on 127.0.0.1:1883 (pid $broker_pid)"
	fi
else
	echo "run: the configuration names broker $url; not starting one"
fi

"$bin" "$conf" &
server_pid=$!
listen=$(awk 'tolower($1)=="listening_ports" {print $2; exit}' "$conf")
listen=${listen:-8080}
listen=${listen%%,*}
listen=${listen%s}
hport=${listen##*:}
for _ in $(seq 100); do
	answers 127.0.0.1 "$hport" && break
	kill -0 "$server_pid" 2>/dev/null || break
	sleep 0.05
done
if answers 127.0.0.1 "$hport"; then
	echo "run: open http://127.0.0.1:$hport/   (Ctrl-C stops)"
fi
wait "$server_pid"
status=$?
server_pid=""
stop_all "$status"
