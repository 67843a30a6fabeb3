package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/httpapi"
	mysqlstore "github.com/convsync/conversations/internal/mysql"
)

// The fixture baseline of the peer figures: the API's own HTTP server, middleware and encoder
// (httpapi.New) answering the same syncs from data held in plain maps, read once from the database at
// start: no store, no caches, no change feed at request time. It bounds from above what the API can do
// per CPU-second; peer.sync_msg*.vs_fixture says how close the API gets. It runs as a process of its
// own (this binary with -serve-fixture), so its CPU time is measured like the API's.

// fixtureAddrVar carries the fixture server's listen address.
const fixtureAddrVar = "FIXTURE_HTTP_ADDR"

// startFixture starts the fixture server on the database dsn.
func (e *env) startFixture(ctx context.Context, dsn string) (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return e.startCmd(ctx, "fixture", exec.Command(self, "-serve-fixture", dsn), fixtureAddrVar, nil)
}

// fixture is every user's rows and every channel's newest messages, in memory.
type fixture struct {
	rows map[string][]conversation.Row
	msgs map[conversation.ChannelKey][]conversation.Message // newest first, at most maxRecents
}

// maxRecents is the most recents a sync may ask for (SYNC_MAX_MSG_COUNT's default).
const maxRecents = 100

func loadFixture(ctx context.Context, dsn string) (*fixture, error) {
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: 2})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	f := &fixture{rows: map[string][]conversation.Row{}, msgs: map[conversation.ChannelKey][]conversation.Message{}}
	uids, err := s.DB().QueryxContext(ctx, `SELECT DISTINCT uid FROM conversations`)
	if err != nil {
		return nil, err
	}
	var users []string
	for uids.Next() {
		var u string
		if err := uids.Scan(&u); err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	uids.Close()
	for _, u := range users {
		rows, _, err := s.UserRows(ctx, u)
		if err != nil {
			return nil, err
		}
		f.rows[u] = rows
	}
	chans, err := s.DB().QueryxContext(ctx, `SELECT channel_key, channel_type, max_seq FROM channels`)
	if err != nil {
		return nil, err
	}
	var ranges []conversation.SeqRange
	for chans.Next() {
		var r conversation.SeqRange
		if err := chans.Scan(&r.Channel.Key, &r.Channel.Type, &r.UpTo); err != nil {
			return nil, err
		}
		r.Count = maxRecents
		ranges = append(ranges, r)
	}
	chans.Close()
	if f.msgs, err = s.Recents(ctx, ranges); err != nil {
		return nil, err
	}
	for _, msgs := range f.msgs { // the same encoder as the API's recents cache: each message once
		for i := range msgs {
			msgs[i].Encoded = httpapi.EncodeRecent(&msgs[i])
		}
	}
	return f, nil
}

func (f *fixture) ReadList(_ context.Context, q conversation.Query) (conversation.ListRead, error) {
	return conversation.ListRead{Rows: f.rows[q.UID]}, nil
}

func (f *fixture) ReadRecents(_ context.Context, _ string, ranges []conversation.SeqRange) (conversation.RecentsRead, error) {
	out := make(map[conversation.ChannelKey][]conversation.Message, len(ranges))
	for _, r := range ranges {
		out[r.Channel] = conversation.PickRecents(f.msgs[r.Channel], r)
	}
	return conversation.RecentsRead{Messages: out}, nil
}

func (f *fixture) Update(context.Context, conversation.ConvKey, func(conversation.Row, int64) (conversation.Row, bool)) (conversation.Row, error) {
	return conversation.Row{}, errors.New("the fixture answers syncs only")
}

func (f *fixture) Ping(context.Context) error { return nil }

// serveFixture loads the fixture from dsn and serves it until ctx ends.
func serveFixture(ctx context.Context, dsn string) error {
	f, err := loadFixture(ctx, dsn)
	if err != nil {
		return fmt.Errorf("load fixture: %w", err)
	}
	gin.SetMode(gin.ReleaseMode) // as cmd/api's main does
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := httpapi.New(f, f, f, httpapi.Options{Logger: log, Registry: prometheus.NewRegistry()})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", os.Getenv(fixtureAddrVar))
	if err != nil {
		return err
	}
	// The API's server settings (cmd/api), so the two differ only in where answers come from.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
