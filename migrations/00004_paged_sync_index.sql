-- Paged incremental sync (contract §2.1, `limit`) reads a user's changed rows in version order and stops
-- after the page, and a user's followers of large channels (contract §5) by themselves, instead of
-- every row of the user: a user with thousands of conversations then costs a page per page, not the
-- whole list. follows sits before version so that both are ranges of one index; a row's follows
-- changes only when its channel crosses the large-channel threshold.

-- +goose Up
ALTER TABLE conversations DROP INDEX conversations_by_version,
    ADD INDEX conversations_by_version (uid, follows, version);

-- +goose Down
ALTER TABLE conversations DROP INDEX conversations_by_version,
    ADD INDEX conversations_by_version (uid, version);
