-- Large channels (contract §5): a channel whose stored membership reaches LARGE_CHANNEL_MEMBERS keeps its
-- broadcast state once, in channels, and each member's row only when the member acts; sync derives the
-- member's conversation from both (conversation.Derive). docs/design.md argues why this is exact.

-- +goose Up
-- channels: large marks read-time fan-out. The broadcast counters count the messages delivered to the
-- whole stored membership (no inline subscribers), in apply order: arrivals all of them, red_dots those
-- with red_dot 1; bc_* is the newest of them; version moves with every broadcast arrival.
ALTER TABLE channels
    ADD COLUMN large            TINYINT        NOT NULL DEFAULT 0,
    ADD COLUMN arrivals         BIGINT         NOT NULL DEFAULT 0,
    ADD COLUMN red_dots         BIGINT         NOT NULL DEFAULT 0,
    ADD COLUMN bc_max_seq       BIGINT         NOT NULL DEFAULT 0,
    ADD COLUMN bc_client_msg_no VARBINARY(128) NOT NULL DEFAULT '',
    ADD COLUMN bc_msg_at        BIGINT         NOT NULL DEFAULT 0,
    ADD COLUMN version          BIGINT         NOT NULL DEFAULT 0;

-- conversations: follows marks a member of a large channel whose row is the state at its base (the
-- channel's counters when the row was written); hidden marks a member with no conversation yet (joined,
-- no message since) or a row that no longer exists.
ALTER TABLE conversations
    ADD COLUMN follows       TINYINT NOT NULL DEFAULT 0,
    ADD COLUMN hidden        TINYINT NOT NULL DEFAULT 0,
    ADD COLUMN base_arrivals BIGINT  NOT NULL DEFAULT 0,
    ADD COLUMN base_red_dots BIGINT  NOT NULL DEFAULT 0,
    ADD COLUMN base_max_seq  BIGINT  NOT NULL DEFAULT 0,
    ADD COLUMN base_floor    BIGINT  NOT NULL DEFAULT 0;

-- Broadcast messages of a large channel that arrived out of seq order (below the channel's newest seq),
-- by arrival number: what a member's derived count must leave out when they fall at or below the
-- member's read or delete point. Kept beyond the window, since only their seq and arrival matter.
CREATE TABLE late_messages (
    channel_key   VARBINARY(129)   NOT NULL,
    channel_type  TINYINT UNSIGNED NOT NULL,
    arrival       BIGINT           NOT NULL,
    message_seq   BIGINT           NOT NULL,
    red_dot       TINYINT          NOT NULL DEFAULT 0,
    client_msg_no VARBINARY(128)   NOT NULL DEFAULT '',
    sent_at       BIGINT           NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_key, channel_type, arrival)
) ENGINE = InnoDB;

-- +goose Down
DROP TABLE late_messages;
ALTER TABLE conversations DROP COLUMN follows, DROP COLUMN hidden, DROP COLUMN base_arrivals,
    DROP COLUMN base_red_dots, DROP COLUMN base_max_seq, DROP COLUMN base_floor;
ALTER TABLE channels DROP COLUMN large, DROP COLUMN arrivals, DROP COLUMN red_dots, DROP COLUMN bc_max_seq,
    DROP COLUMN bc_client_msg_no, DROP COLUMN bc_msg_at, DROP COLUMN version;
