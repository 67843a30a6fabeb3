package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// dump returns every table of the database, every row, every column, in primary-key order: two dumps
// are equal exactly when the databases hold the same bytes.
func (s *stack) dump() map[string][]string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()`)
	if err != nil {
		s.t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			s.t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	out := map[string][]string{}
	for _, table := range tables {
		out[table] = s.dumpTable(ctx, table)
	}
	return out
}

func (s *stack) dumpTable(ctx context.Context, table string) []string {
	s.t.Helper()
	probe, err := s.db.QueryContext(ctx, "SELECT * FROM `"+table+"` LIMIT 0")
	if err != nil {
		s.t.Fatal(err)
	}
	cols, err := probe.Columns()
	probe.Close()
	if err != nil {
		s.t.Fatal(err)
	}
	order := make([]string, len(cols))
	for i := range cols {
		order[i] = strconv.Itoa(i + 1)
	}
	rows, err := s.db.QueryContext(ctx, "SELECT * FROM `"+table+"` ORDER BY "+strings.Join(order, ","))
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			s.t.Fatal(err)
		}
		var b strings.Builder
		for i, v := range vals {
			if i > 0 {
				b.WriteByte('|')
			}
			if v == nil {
				b.WriteString("NULL")
			} else {
				fmt.Fprintf(&b, "%q", v)
			}
		}
		out = append(out, b.String())
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}
