-- The read model of contract §3 and §4. Ids are VARBINARY: uids and channel ids are case-sensitive byte
-- strings, and byte order is the order the API sorts by. Widths match internal/conversation's limits.
-- Portable to MySQL 8.x, MariaDB 10.11 and TiDB: no generated columns, triggers or procedures.

-- +goose Up
CREATE TABLE conversations (
    uid                VARBINARY(64)    NOT NULL,
    -- the peer's uid for person channels, else the channel id
    channel_id         VARBINARY(128)   NOT NULL,
    channel_type       TINYINT UNSIGNED NOT NULL,
    unread             BIGINT           NOT NULL DEFAULT 0,
    readed_to_msg_seq  BIGINT           NOT NULL DEFAULT 0,
    last_msg_seq       BIGINT           NOT NULL DEFAULT 0,
    last_client_msg_no VARBINARY(128)   NOT NULL DEFAULT '',
    -- the last message's timestamp, unix seconds
    last_msg_at        BIGINT           NOT NULL DEFAULT 0,
    -- tombstones (contract §3.5): is_deleted with the seq and time of the delete
    is_deleted         TINYINT          NOT NULL DEFAULT 0,
    deleted_at_seq     BIGINT           NOT NULL DEFAULT 0,
    deleted_at_ms      BIGINT           NOT NULL DEFAULT 0,
    version            BIGINT           NOT NULL,
    PRIMARY KEY (uid, channel_id, channel_type),
    -- incremental sync: rows of a user with version > v, lowest versions first
    KEY conversations_by_version (uid, version),
    -- tombstone purge
    KEY conversations_tombstones (is_deleted, deleted_at_ms)
) ENGINE = InnoDB;

-- One row per user: the last version given to any of the user's conversations (contract §3.6). Its row
-- lock is what orders versions by commit.
CREATE TABLE user_versions (
    uid     VARBINARY(64) NOT NULL,
    version BIGINT        NOT NULL,
    PRIMARY KEY (uid)
) ENGINE = InnoDB;

-- One row per channel (storage key, type). Its row lock serialises every batch that touches the channel.
-- min_kept_seq is the watermark of the recents window: messages below it were pruned and are treated as
-- already applied, so pruning never lets a replay count a message twice.
CREATE TABLE channels (
    channel_key  VARBINARY(129)   NOT NULL,
    channel_type TINYINT UNSIGNED NOT NULL,
    max_seq      BIGINT           NOT NULL DEFAULT 0,
    min_kept_seq BIGINT           NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_key, channel_type)
) ENGINE = InnoDB;

-- The recents window: the newest messages of each channel, stored once under the channel's storage key.
-- A row here also records that (channel_key, channel_type, message_seq) was applied.
CREATE TABLE messages (
    channel_key   VARBINARY(129)   NOT NULL,
    channel_type  TINYINT UNSIGNED NOT NULL,
    message_seq   BIGINT           NOT NULL,
    message_id    BIGINT           NOT NULL,
    client_msg_no VARBINARY(128)   NOT NULL DEFAULT '',
    from_uid      VARBINARY(64)    NOT NULL DEFAULT '',
    -- the channel as the sender addressed it (the recipient's uid for person channels)
    channel_id    VARBINARY(128)   NOT NULL,
    sent_at       BIGINT           NOT NULL,
    red_dot       TINYINT          NOT NULL DEFAULT 0,
    setting       TINYINT UNSIGNED NOT NULL DEFAULT 0,
    expire        INT UNSIGNED     NOT NULL DEFAULT 0,
    payload       MEDIUMBLOB       NOT NULL,
    PRIMARY KEY (channel_key, channel_type, message_seq)
) ENGINE = InnoDB;

-- Membership built by channel.subscribers.* events (contract §1.2), for messages without subscribers.
CREATE TABLE channel_members (
    channel_id   VARBINARY(128)   NOT NULL,
    channel_type TINYINT UNSIGNED NOT NULL,
    uid          VARBINARY(64)    NOT NULL,
    PRIMARY KEY (channel_id, channel_type, uid)
) ENGINE = InnoDB;

-- +goose Down
DROP TABLE channel_members;
DROP TABLE messages;
DROP TABLE channels;
DROP TABLE user_versions;
DROP TABLE conversations;
