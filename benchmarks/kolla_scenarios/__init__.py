"""The Kolla HA spec's five failure scenarios under locust, loadstone beside HAProxy.

    .venv/bin/python -m benchmarks.kolla_scenarios [--proxy loadstone|haproxy|both]
        [--scenario baseline,api,galera,rabbitmq,scale] [--duration 60] [--out DIR]

A small OpenStack control plane on loopback (cloud.py): three controllers on
127.0.0.11-13 running imitation API services (api.py), a real 3-node Galera
cluster, a real RabbitMQ cluster and memcached, with the proxy under test on the
virtual IP 127.0.0.10 (proxies.py). locust users (locustfile.py) log in and
then read and write through the VIP while the runner (__main__.py) injects the
scenario's fault at fixed times (scenarios.py); report.py turns each run into
a plot, a markdown table and summary.json.
"""
