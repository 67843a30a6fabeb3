package httpapi

import (
	"context"
	"encoding/base64"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/convsync/conversations/internal/conversation"
)

// syncRequest is the body of POST /conversation/sync (contract §2.1). Absent and null fields are zero,
// which is WuKongIM's behaviour for each of them.
type syncRequest struct {
	UID                 string  `json:"uid"`
	Version             int64   `json:"version"`
	LastMsgSeqs         string  `json:"last_msg_seqs"`
	MsgCount            int64   `json:"msg_count"`
	OnlyUnread          int64   `json:"only_unread"`
	ExcludeChannelTypes []int64 `json:"exclude_channel_types"`
	IncludeDeleted      int64   `json:"include_deleted"`
	Limit               int64   `json:"limit"`
}

// syncQuery is a validated sync request.
type syncQuery struct {
	query    conversation.Query
	lastSeqs map[conversation.Channel]int64
	msgCount int
}

func (a *api) parseSync(r *http.Request) (syncQuery, error) {
	var req syncRequest
	if err := decodeJSON(r, &req); err != nil {
		return syncQuery{}, err
	}
	if err := checkUID(req.UID); err != nil {
		return syncQuery{}, err
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"only_unread", req.OnlyUnread}, {"include_deleted", req.IncludeDeleted}} {
		if f.v != 0 && f.v != 1 {
			return syncQuery{}, badRequest("%s must be 0 or 1", f.name)
		}
	}
	if req.Limit < 0 {
		return syncQuery{}, badRequest("limit must be >= 0")
	}
	q := syncQuery{query: conversation.Query{
		UID:            req.UID,
		Version:        req.Version,
		NowMS:          time.Now().UnixMilli(),
		Limit:          int(min(req.Limit, math.MaxInt32)),
		MaxFull:        a.opts.MaxConversations,
		OnlyUnread:     req.OnlyUnread == 1,
		IncludeDeleted: req.IncludeDeleted == 1,
	}}
	for _, t := range req.ExcludeChannelTypes {
		if !conversation.ValidChannelType(t) {
			return syncQuery{}, badRequest("exclude_channel_types: %d is outside 1..255", t)
		}
		q.query.ExcludeTypes = append(q.query.ExcludeTypes, uint8(t))
	}
	entries, err := parseLastMsgSeqs(req.LastMsgSeqs)
	if err != nil {
		return syncQuery{}, err
	}
	if len(entries) > 0 {
		q.lastSeqs = make(map[conversation.Channel]int64, len(entries))
		for _, e := range entries {
			q.lastSeqs[e.Channel] = e.Seq // a channel named twice: the later entry wins
		}
	}
	q.msgCount = int(max(0, min(req.MsgCount, int64(a.opts.MaxMsgCount))))
	return q, nil
}

// sync answers POST /conversation/sync: one store read for the rows (a page of them for a paged
// incremental sync, when rows can read pages), one Recents call for all their
// recents, whatever the number of conversations, encoded by appendSync.
func (a *api) sync(c *gin.Context) error {
	q, err := a.parseSync(c.Request)
	if err != nil {
		return err
	}
	// The user is noted for a read model sharded by user, which reads the recents from the user's shard.
	ctx, cancel := context.WithTimeout(c.Request.Context(), a.opts.RequestTimeout)
	defer cancel()
	list, err := a.rows.ReadList(ctx, q.query)
	if err != nil {
		return err
	}
	// Large channels' conversations are answered with versions taken from when the list was known
	// current: the user's version read with it, and the clock then, not now (conversation.Query).
	q.query.UserVersion = list.Version
	if asOf := list.Served.AsOf; !asOf.IsZero() {
		q.query.NowMS = min(q.query.NowMS, asOf.UnixMilli())
	}
	rows := conversation.Select(list.Rows, q.query)
	served := list.Served
	var recents conversation.RecentsRead
	if q.msgCount > 0 && len(rows) > 0 {
		ranges := make([]conversation.SeqRange, len(rows))
		for i := range rows {
			ranges[i] = q.seqRange(&rows[i])
		}
		if recents, err = a.recents.ReadRecents(ctx, q.query.UID, ranges); err != nil {
			return err
		}
		served = served.Join(recents.Served)
	}
	if served.Outage {
		// The database was unreachable: the answer is the caches' last known state, exact as of the last
		// announcement this replica received (docs/api.md).
		c.Header(HeaderOutage, "cached")
	}
	return writeSync(c, rows, recents.Messages)
}

// HeaderOutage is set on a sync answer ("cached") that came from the outage path: the database could not
// be reached and the caches answered with the state of the last change announced to this replica.
const HeaderOutage = "X-Conv-Outage"

// seqRange is a conversation's recents as conversation.RecentsRange defines them, with the client's own
// last seq of the channel from last_msg_seqs.
func (q *syncQuery) seqRange(row *conversation.Row) conversation.SeqRange {
	ch := channelOf(row)
	return conversation.RecentsRange(row, conversation.ChannelKeyOf(row.UID, ch), q.lastSeqs[ch], q.msgCount)
}

// channelOf names a row's channel as its user (and last_msg_seqs) names it.
func channelOf(row *conversation.Row) conversation.Channel {
	return conversation.Channel{ID: row.ChannelID, Type: row.ChannelType}
}

// syncItem is one conversation as WuKongIM sends it, plus readed_to_msg_seq (WuKongIM v2) and, for
// tombstones, is_deleted.
type syncItem struct {
	ChannelID       string      `json:"channel_id"`
	ChannelType     uint8       `json:"channel_type"`
	Unread          int64       `json:"unread"`
	Timestamp       int64       `json:"timestamp"`
	LastMsgSeq      int64       `json:"last_msg_seq"`
	LastClientMsgNo string      `json:"last_client_msg_no"`
	OffsetMsgSeq    int64       `json:"offset_msg_seq"`
	ReadedToMsgSeq  int64       `json:"readed_to_msg_seq"`
	Version         int64       `json:"version"`
	Recents         []recentMsg `json:"recents"`
	IsDeleted       int         `json:"is_deleted,omitempty"`
}

// recentMsg is one message of a conversation's recents, in WuKongIM's message JSON.
type recentMsg struct {
	Header       msgHeader `json:"header"`
	Setting      uint8     `json:"setting"`
	MessageID    int64     `json:"message_id"`
	MessageIDStr string    `json:"message_idstr"`
	ClientMsgNo  string    `json:"client_msg_no"`
	MessageSeq   int64     `json:"message_seq"`
	FromUID      string    `json:"from_uid"`
	ChannelID    string    `json:"channel_id"`
	ChannelType  uint8     `json:"channel_type"`
	Expire       uint32    `json:"expire"`
	Timestamp    int64     `json:"timestamp"`
	Payload      string    `json:"payload"`
}

// msgHeader: stored messages are never no_persist or sync_once (contract §3.2), so only red_dot varies.
type msgHeader struct {
	NoPersist uint8 `json:"no_persist"`
	RedDot    uint8 `json:"red_dot"`
	SyncOnce  uint8 `json:"sync_once"`
}

// newSyncItem is the reference encoding of an answer's item, through the types above and encoding/json:
// appendSync must write the same bytes (TestEncoderMatchesEncodingJSON), and tests compare against it.
func newSyncItem(row *conversation.Row, msgs []conversation.Message) syncItem {
	it := syncItem{
		ChannelID:       row.ChannelID,
		ChannelType:     row.ChannelType,
		Unread:          row.Unread,
		Timestamp:       row.Timestamp,
		LastMsgSeq:      row.LastMsgSeq,
		LastClientMsgNo: row.LastClientMsgNo,
		ReadedToMsgSeq:  row.ReadedToMsgSeq,
		Version:         row.Version,
		Recents:         make([]recentMsg, len(msgs)),
	}
	if row.Deleted {
		it.IsDeleted = 1
	}
	for i := range msgs {
		m := &msgs[i]
		it.Recents[i] = recentMsg{
			Header:       msgHeader{RedDot: m.Header.RedDot},
			Setting:      m.Setting,
			MessageID:    m.MessageID,
			MessageIDStr: strconv.FormatInt(m.MessageID, 10),
			ClientMsgNo:  m.ClientMsgNo,
			MessageSeq:   m.MessageSeq,
			FromUID:      m.FromUID,
			ChannelID:    m.ChannelID,
			ChannelType:  m.ChannelType,
			Expire:       m.Expire,
			Timestamp:    m.Timestamp,
			Payload:      base64.StdEncoding.EncodeToString(m.Payload),
		}
	}
	return it
}

var bufPool = sync.Pool{New: func() any { return new([]byte) }}

// writeSync writes the bare array of rows with their recents; [] when empty, never null.
func writeSync(c *gin.Context, rows []conversation.Row, recents map[conversation.ChannelKey][]conversation.Message) error {
	bp := bufPool.Get().(*[]byte)
	b := appendSync((*bp)[:0], rows, recents)
	c.Data(http.StatusOK, contentTypeJSON, b)
	if cap(b) <= 1<<20 { // do not let one huge answer pin its buffer
		*bp = b[:0]
		bufPool.Put(bp)
	}
	return nil
}
