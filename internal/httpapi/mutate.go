package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/convsync/conversations/internal/conversation"
)

// setUnreadRequest is the body of POST /conversations/setUnread (contract §2.2). An absent or null
// unread is 0, as in WuKongIM.
type setUnreadRequest struct {
	convRequest
	Unread int64 `json:"unread"`
}

// setUnread sets the unread count of a live conversation; unread 0 also marks it read. The store bumps
// the version only when a field changed, so a setUnread that changes nothing is invisible to sync.
func (a *api) setUnread(c *gin.Context) error {
	var req setUnreadRequest
	key, err := decodeConv(c.Request, &req)
	if err != nil {
		return err
	}
	if req.Unread < 0 {
		return badRequest("unread cannot be negative")
	}
	return a.update(c, key, func(row conversation.Row, _ int64) (conversation.Row, bool) {
		return conversation.SetUnread(row, req.Unread)
	})
}

// clearUnread is setUnread with unread 0, with delete's body (contract §2.4).
func (a *api) clearUnread(c *gin.Context) error {
	var req convRequest
	key, err := decodeConv(c.Request, &req)
	if err != nil {
		return err
	}
	return a.update(c, key, func(row conversation.Row, _ int64) (conversation.Row, bool) {
		return conversation.SetUnread(row, 0)
	})
}

// delete turns a conversation into a tombstone (contract §2.3, §3.5).
func (a *api) delete(c *gin.Context) error {
	var req convRequest
	key, err := decodeConv(c.Request, &req)
	if err != nil {
		return err
	}
	return a.update(c, key, conversation.Delete)
}

// decodeConv decodes a mutation's body into req and returns the conversation it names, validated.
func decodeConv(r *http.Request, req interface {
	key() (conversation.ConvKey, error)
}) (conversation.ConvKey, error) {
	if err := decodeJSON(r, req); err != nil {
		return conversation.ConvKey{}, err
	}
	return req.key()
}

// update runs change on one conversation and answers {"status":200}; a conversation that does not exist
// is a success that changes nothing, as in WuKongIM.
func (a *api) update(c *gin.Context, key conversation.ConvKey, change func(conversation.Row, int64) (conversation.Row, bool)) error {
	ctx, cancel := context.WithTimeout(c.Request.Context(), a.opts.RequestTimeout)
	defer cancel()
	if _, err := a.store.Update(ctx, key, change); err != nil && !errors.Is(err, conversation.ErrNotFound) {
		return err
	}
	c.Data(http.StatusOK, contentTypeJSON, okBody)
	return nil
}
