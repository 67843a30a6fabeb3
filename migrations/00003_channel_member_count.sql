-- The size of each channel's stored membership, kept with it: a batch to a large channel (contract §5)
-- then reads only the membership of the uids it names, not the whole of it.

-- +goose Up
ALTER TABLE channels ADD COLUMN members BIGINT NOT NULL DEFAULT 0;
UPDATE channels c SET members = (SELECT COUNT(*) FROM channel_members m
    WHERE m.channel_id = c.channel_key AND m.channel_type = c.channel_type);

-- +goose Down
ALTER TABLE channels DROP COLUMN members;
