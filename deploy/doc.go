// Package deploy holds streamgate's deployment examples: Kubernetes manifests
// (kubernetes/), a Docker Compose stack of gateway, PostgreSQL and Redis
// (docker-compose.yml) and a Grafana dashboard on the gateway's metrics
// (grafana-dashboard.json). It has no code; its test checks that the manifests
// parse and keep their promises (two replicas, probes, secrets by reference,
// the admin port private) and that the dashboard queries only metrics the
// gateway exports.
package deploy
