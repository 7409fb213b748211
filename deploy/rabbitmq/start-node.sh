#!/bin/sh
# Starts a RabbitMQ node of docker-compose.yml: the shared Erlang cookie first (the nodes of one cluster
# must hold the same one), then the image's own entrypoint. The cluster profile's nodes (CLUSTER_NODE=yes)
# refuse to start when the service would declare classic queues (a classic queue lives on one node, and
# its messages are out of reach while that node is down) or without the cookie.
set -eu
if [ "${CLUSTER_NODE:-no}" = yes ]; then
    if [ "${AUTH0_EVENTS_QUEUE_TYPE:-classic}" != quorum ]; then
        echo "start-node: the cluster profile needs AUTH0_EVENTS_QUEUE_TYPE=quorum in .env" >&2
        exit 1
    fi
    if [ -z "${RABBITMQ_COOKIE:-}" ]; then
        echo "start-node: the cluster profile needs RABBITMQ_CLUSTER_COOKIE in .env (one for all nodes)" >&2
        exit 1
    fi
fi
if [ -n "${RABBITMQ_COOKIE:-}" ]; then
    umask 077
    printf '%s' "$RABBITMQ_COOKIE" > /var/lib/rabbitmq/.erlang.cookie
    chown rabbitmq:rabbitmq /var/lib/rabbitmq/.erlang.cookie
fi
exec docker-entrypoint.sh rabbitmq-server
