-- The purge of late_messages (internal/purge) asks, per channel with late messages, for its followers
-- whose base is older than a late message. Without this index that is a scan of every conversation.
-- Its columns change only when a row starts or stops following or is rebased, not with read points, so
-- the write path of plain conversations does not pay for it.

-- +goose Up
CREATE INDEX conversations_followers ON conversations (channel_id, channel_type, follows, base_arrivals);

-- +goose Down
DROP INDEX conversations_followers ON conversations;
