-- convmeta (one shard): which migrations of migrations/ the conv keyspace's shards were created with.
-- deploy/local/vitess.sh fills it at start; with vitess-operator, the schema job does.
CREATE TABLE schema_migrations (
    version    BIGINT      NOT NULL,
    file       VARCHAR(255) NOT NULL,
    applied_at TIMESTAMP   NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (version)
) ENGINE = InnoDB;
