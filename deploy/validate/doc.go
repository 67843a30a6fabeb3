// Package validate checks, offline, what deploy/k8s ships: it renders the kustomize overlays with
// kustomize's Go API, decodes every document strictly into the Kubernetes (and Prometheus Operator)
// types, cross-checks selectors, ports, probes, env vars and shutdown timing, starts the real binaries
// with each container's environment, and checks the alert rules and the Grafana dashboard against the
// metrics the binaries export. It is a module of its own so that kustomize, k8s.io/api and Prometheus
// stay out of the service's module; `make test` runs it.
package validate
