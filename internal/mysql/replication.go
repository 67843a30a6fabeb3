package mysql

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Position is a set of transactions by global transaction id: what a primary has committed, or what a
// replica has applied. Both servers' flavours map onto it: MariaDB's domain-server-seq positions (a
// domain's seq covers every lower seq of that domain) and MySQL's GTID sets (source uuid with
// intervals). The zero value is the empty set.
type Position struct {
	// streams maps a MariaDB domain or a MySQL source uuid to the transaction numbers it holds, as
	// sorted, non-overlapping closed intervals.
	streams map[string][]interval
}

type interval struct{ lo, hi int64 }

// String is the position in the server's own notation, sorted by stream.
func (p Position) String() string {
	keys := make([]string, 0, len(p.streams))
	for k := range p.streams {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		for _, iv := range p.streams[k] {
			fmt.Fprintf(&b, ":%d-%d", iv.lo, iv.hi)
		}
	}
	return b.String()
}

// Covers reports whether p holds every transaction of q: a replica whose applied position covers the
// primary's position of some moment has every commit made before that moment.
func (p Position) Covers(q Position) bool {
	for k, want := range q.streams {
		have := p.streams[k]
		for _, w := range want {
			if !slices.ContainsFunc(have, func(h interval) bool { return h.lo <= w.lo && w.hi <= h.hi }) {
				return false
			}
		}
	}
	return true
}

// ParseMariaDBPosition parses a MariaDB GTID position ("0-1-120,1-2-7": domain-server-seq per domain).
// Within a domain, seqs grow whatever server wrote them, so the position holds seqs 1..seq.
func ParseMariaDBPosition(s string) (Position, error) {
	p := Position{streams: map[string][]interval{}}
	for part := range strings.SplitSeq(strings.TrimSpace(s), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f := strings.Split(part, "-")
		if len(f) != 3 {
			return Position{}, fmt.Errorf("GTID position %q: %q is not domain-server-seq", s, part)
		}
		seq, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || seq < 0 {
			return Position{}, fmt.Errorf("GTID position %q: bad seq in %q", s, part)
		}
		if _, err := strconv.ParseUint(f[0], 10, 32); err != nil {
			return Position{}, fmt.Errorf("GTID position %q: bad domain in %q", s, part)
		}
		if seq > 0 {
			p.streams["domain-"+f[0]] = []interval{{1, seq}}
		}
	}
	return p, nil
}

// ParseMySQLGTIDSet parses a MySQL GTID set ("uuid:1-100:105,uuid2:1-5", tags included as part of the
// source).
func ParseMySQLGTIDSet(s string) (Position, error) {
	p := Position{streams: map[string][]interval{}}
	for part := range strings.SplitSeq(strings.ReplaceAll(s, "\n", ""), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f := strings.Split(part, ":")
		src := strings.ToLower(f[0])
		for _, r := range f[1:] {
			if r != "" && (r[0] < '0' || r[0] > '9') { // a tag (MySQL 8.3+): uuid:tag:1-5
				src += ":" + r
				continue
			}
			lo, hi, found := strings.Cut(r, "-")
			a, err := strconv.ParseInt(lo, 10, 64)
			if err != nil {
				return Position{}, fmt.Errorf("GTID set %q: bad interval %q", s, r)
			}
			b := a
			if found {
				if b, err = strconv.ParseInt(hi, 10, 64); err != nil || b < a {
					return Position{}, fmt.Errorf("GTID set %q: bad interval %q", s, r)
				}
			}
			p.streams[src] = append(p.streams[src], interval{a, b})
		}
	}
	for k, ivs := range p.streams {
		slices.SortFunc(ivs, func(x, y interval) int { return int(x.lo - y.lo) })
		merged := ivs[:1]
		for _, iv := range ivs[1:] {
			if last := &merged[len(merged)-1]; iv.lo <= last.hi+1 {
				last.hi = max(last.hi, iv.hi)
			} else {
				merged = append(merged, iv)
			}
		}
		p.streams[k] = merged
	}
	return p, nil
}

// flavour of the server behind a Store, found on first use: MariaDB and MySQL name their positions
// differently.
const (
	flavourUnknown int32 = iota
	flavourMariaDB
	flavourMySQL
)

// PrimaryPosition returns what this server has committed, as a primary: MariaDB's @@gtid_binlog_pos,
// MySQL's @@gtid_executed. It returns an error when the server cannot be reached or has no GTIDs.
func (s *Store) PrimaryPosition(ctx context.Context) (Position, error) {
	return s.position(ctx, "@@GLOBAL.gtid_binlog_pos")
}

// AppliedPosition returns what this server has applied of its primary's transactions, as a replica:
// MariaDB's @@gtid_slave_pos, MySQL's @@gtid_executed. It returns an error when the server cannot be
// reached or has no GTIDs.
func (s *Store) AppliedPosition(ctx context.Context) (Position, error) {
	return s.position(ctx, "@@GLOBAL.gtid_slave_pos")
}

// position reads the MariaDB variable, or MySQL's @@gtid_executed on a MySQL server.
func (s *Store) position(ctx context.Context, mariadbVar string) (Position, error) {
	if s.flavour.Load() != flavourMySQL {
		var v string
		err := s.db.QueryRowxContext(ctx, "SELECT "+mariadbVar).Scan(&v)
		if err == nil {
			s.flavour.Store(flavourMariaDB)
			return ParseMariaDBPosition(v)
		}
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1193 { // 1193: unknown system variable, i.e. not MariaDB
			return Position{}, fmt.Errorf("read %s: %w", mariadbVar, translate(err))
		}
		s.flavour.Store(flavourMySQL)
	}
	var v string
	if err := s.db.QueryRowxContext(ctx, "SELECT @@GLOBAL.gtid_executed").Scan(&v); err != nil {
		return Position{}, fmt.Errorf("read @@gtid_executed: %w", translate(err))
	}
	return ParseMySQLGTIDSet(v)
}
