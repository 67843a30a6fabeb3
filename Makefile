# Conversation service - developer entry points. `make` (or `make help`) lists them.
# Local services run without Docker: deploy/local/{mysql,kafka}.sh (state in .run/).

SHELL := /bin/bash
.DEFAULT_GOAL := help

LOCAL := deploy/local
BIN   := .run/bin

# Runtime configuration of the Go commands (override on the command line or in the env).
MYSQL_DSN           ?= conv:conv@tcp(127.0.0.1:3306)/conversations
KAFKA_BROKERS       ?= 127.0.0.1:9092
KAFKA_TOPIC         ?= im.messages
KAFKA_DLQ_TOPIC     ?= im.messages.dlq
KAFKA_PARTITIONS    ?= 6
KAFKA_GROUP_ID      ?= conversation-projector
PROJECTOR_HTTP_ADDR ?= 127.0.0.1:8081
API_HTTP_ADDR       ?= 127.0.0.1:8080
# The local stack has one broker: topics cannot have the three replicas the service asks by default
# (contract §6). `make cluster` runs three brokers and sets it false.
KAFKA_ALLOW_UNREPLICATED ?= true
export MYSQL_DSN KAFKA_BROKERS KAFKA_TOPIC KAFKA_DLQ_TOPIC KAFKA_PARTITIONS KAFKA_GROUP_ID \
       PROJECTOR_HTTP_ADDR API_HTTP_ADDR KAFKA_ALLOW_UNREPLICATED

# Integration tests (and the benchmark) use their own account and databases.
TEST_MYSQL_DSN     ?= convtest:convtest@tcp(127.0.0.1:3306)/
TEST_KAFKA_BROKERS ?= 127.0.0.1:9092
export TEST_MYSQL_DSN TEST_KAFKA_BROKERS

# staticcheck 2026.2.2 (module version v0.8.2) builds with and understands Go 1.26.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := .cache/tools/staticcheck-$(STATICCHECK_VERSION)/staticcheck

BENCH_ARGS ?=
CHAOS_ARGS ?=

.PHONY: help services services-status migrate build run test test-vitess vitess bench-vitess down status lint vet bench \
        bench-scale chaos clean cluster cluster-down cluster-status chaos-cluster bench-cluster

help: ## list the targets
	@echo "Targets:"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

services: ## start MariaDB (127.0.0.1:3306) and Kafka (127.0.0.1:9092), or reuse running ones
	@echo "==> starting mariadb"; $(LOCAL)/mysql.sh start
	@echo "==> starting kafka";   $(LOCAL)/kafka.sh start

status: ## show what is running (services, projector, api)
	@$(LOCAL)/mysql.sh status || true
	@$(LOCAL)/kafka.sh status || true
	@$(LOCAL)/apps.sh status || true

build: ## build all commands into .run/bin/
	@mkdir -p $(BIN)
	go build -o $(BIN)/ ./cmd/...

migrate: services ## apply database migrations and create the Kafka topics
	@mkdir -p $(BIN)
	go build -o $(BIN)/ ./cmd/migrate
	$(BIN)/migrate

# DB=vitess runs the read model sharded on Vitess. DB is a common name: a value the environment holds
# for something else (DB=postgres) is not ours and must not make `make run` refuse to start.
DB ?= mariadb
RUN_DB := $(if $(filter command line,$(origin DB)),$(DB),$(if $(filter mariadb vitess,$(DB)),$(DB),mariadb))

run: ## services + migrate + projector & api in the background + demo traffic; prints curl examples (DB=vitess: sharded on Vitess)
	@DB=$(RUN_DB) $(LOCAL)/run.sh

test: ## go test -race ./... against real MariaDB + Kafka (stops only what it started)
	@$(LOCAL)/test.sh

test-vitess: ## the store, differential and sharded tests through vtgate (vttestserver, 2 shards; builds Vitess once)
	@$(LOCAL)/test-vitess.sh

bench-vitess: ## the projector through vtgate (a group per shard) against plain MariaDB, same run: vitess.* figures
	@$(LOCAL)/vitess.sh start
	@eval "$$($(LOCAL)/vitess.sh env)"; BENCH_VITESS_DSN="$$VITESS_DSN" BENCH_VITESS_SHARDS="$$VITESS_SHARDS" \
		$(LOCAL)/bench.sh -only vitess $(BENCH_ARGS)

vitess: ## start vttestserver (keyspaces conv: 2 shards, convmeta: 1) on 127.0.0.1:15000-15003, or reuse ours
	@$(LOCAL)/vitess.sh start

down: ## stop api, projector, kafka and mariadb, vitess (only what this project started)
	@$(LOCAL)/apps.sh stop
	@$(LOCAL)/vitess-apps.sh stop
	@$(LOCAL)/vitess.sh stop
	@$(LOCAL)/kafka.sh stop
	@$(LOCAL)/mysql.sh stop

vet: ## go vet ./...
	go vet ./...

lint: vet $(STATICCHECK) ## go vet + staticcheck (the deploy/validate module too)
	$(STATICCHECK) ./...
	cd deploy/validate && go vet ./... && $(abspath $(STATICCHECK)) ./...

$(STATICCHECK):
	@echo "==> installing staticcheck $(STATICCHECK_VERSION) into $(@D)"
	GOBIN=$(abspath $(@D)) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

bench: ## benchmarks with baselines (starts and stops the services it needs; args: BENCH_ARGS=...)
	@$(LOCAL)/bench.sh $(BENCH_ARGS)

bench-scale: ## the data-scale bench: 1M users, 10M rows on a private MariaDB :14306 (~20 min; args: BENCH_ARGS=...)
	@$(LOCAL)/bench-scale.sh $(BENCH_ARGS)

chaos: ## kill -9 replicas, restart a private MariaDB and Kafka, fuzz; compare with the model (args: CHAOS_ARGS=...)
	@$(LOCAL)/chaos.sh $(CHAOS_ARGS)

cluster: ## 3 Kafka brokers, MariaDB primary + 2 replicas, 2 projectors, 2 APIs (restarts what is not running)
	@$(LOCAL)/cluster.sh up

cluster-down: ## stop what `make cluster` started (data stays in .run/cluster)
	@$(LOCAL)/cluster.sh down

chaos-cluster: ## make chaos on the cluster: broker leader kill -9, a replica frozen, the primary restarted (args: CHAOS_ARGS=...)
	@$(LOCAL)/chaos-cluster.sh $(CHAOS_ARGS)

bench-cluster: ## make cluster, then the cluster.* figures beside single-node freshness (args: BENCH_ARGS=...)
	@$(LOCAL)/cluster.sh up
	@$(LOCAL)/bench.sh -only freshness,cluster $(BENCH_ARGS)

cluster-status: ## show the cluster's processes
	@$(LOCAL)/cluster.sh status

clean: down ## stop everything and delete .run/ (data, logs, binaries); keeps .cache/
	rm -rf .run
