// Package e2e holds the end-to-end tests: they build the real commands (cmd/projector, cmd/api,
// cmd/migrate), run them as processes against the real MySQL/MariaDB and Kafka with a fresh database,
// fresh topics and fresh consumer groups per test, and compare what they produce with the reference model
// (internal/refmodel). There is no code here besides the tests.
package e2e
