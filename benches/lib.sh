# Shell helpers the bench scripts share: `source "$here/lib.sh"` (bash).

# wait_port PORT [SECONDS]: returns once something accepts connections on 127.0.0.1:PORT; after
# SECONDS (default 10) of nothing, says so and exits the script.
wait_port() {
  local port=$1 tries=$((${2:-10} * 20))
  for _ in $(seq 1 "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $port" >&2
  exit 1
}
